//! Formatting a volume, reading what its header says, unlocking it with the secret from
//! KMIP, and reading and writing its plaintext at any byte offset.

use std::sync::Arc;

use serde_json::Map;
use zeroize::Zeroizing;

use crate::backend::BlockBackend;
pub use crate::layout::{DATA_OFFSET, HDR_SIZE};
use crate::luks2::binary::{BinaryHeader, BINARY_SIZE};
use crate::luks2::header::{self, Header};
use crate::luks2::metadata::{Config, Metadata, Segment};
pub use crate::luks2::token::KeyMode;
use crate::luks2::token::{self as tok, Kind};
use crate::luks2::validate::{self, DataArea, Geometry, Layout};
use crate::luks2::{keys, Luks2Error};
use crate::random::RandomError;
use crate::xts::Xts;

/// How to format.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// Wrapped (default) or direct.
    pub mode: KeyMode,
    /// Volume key length: 32 (XTS-AES-128) or 64 (XTS-AES-256, wrapped only).
    pub volume_key_len: usize,
    /// 512 or 4096.
    pub sector_size: u32,
    /// The KMIP key's Unique Identifier, recorded in the token.
    pub key_uid: String,
    /// The server it came from: a hint for operators, never dialled.
    pub server_hint: Option<String>,
    /// Plaintext bytes, for a volume that does not run to the end of its device (one made
    /// by converting existing data); `None` for "to the end of the device".
    pub data_size: Option<u64>,
    /// The header goes to its own file or device (cryptsetup's `--header`); the data
    /// starts at byte 0 of the data device.
    pub detached: bool,
}

/// Errors of the volume operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The header.
    #[error(transparent)]
    Header(#[from] Luks2Error),
    /// The key from KMIP does not open this volume.
    #[error("the key does not match this volume (wrong key identifier, or a key that was replaced on the server); nothing was written")]
    WrongKey,
    /// Options that cannot be honoured.
    #[error("{0}")]
    Invalid(String),
    /// `atrest bind` of a volume that is bound already.
    #[error("this volume is managed by atrest already (KMIP key {key_uid}); nothing was changed")]
    AlreadyBound {
        /// The key its token names, escaped.
        key_uid: String,
    },
    /// `atrest bind` with a passphrase or key file that opens no keyslot.
    #[error("the passphrase (or key file) opens no keyslot of this volume; nothing was changed")]
    WrongPassphrase,
    /// Not an atrest volume (no atrest token).
    #[error("this LUKS2 volume has no atrest token: it was not made by atrest (or the token was removed)")]
    NoToken,
    /// No random bytes for a key.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// No locked, never-dumped memory for a key schedule.
    #[error(transparent)]
    KeyMemory(#[from] secmem::LockError),
    /// Read or write failed.
    #[error("I/O at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// A conversion (encrypt, decrypt, deep rekey) has not finished.
    #[error("{}", interrupted(*kind))]
    ConversionInProgress {
        /// Which, when the header says.
        kind: Option<Kind>,
    },
    /// A read or write outside the volume.
    #[error("{len} bytes at byte {offset} are outside the volume of {size} bytes")]
    OutOfRange {
        /// Start.
        offset: u64,
        /// Length.
        len: usize,
        /// Volume size.
        size: u64,
    },
    /// An online conversion step failed part-way: the disk under its hot zone is in the
    /// state a crash would leave, which only the conversion's resume (from its journal)
    /// may read or write. Every I/O is refused until the volume is opened again.
    #[error(
        "the volume stopped taking I/O: {0}; it resumes the conversion when it is opened again"
    )]
    Halted(String),
}

fn interrupted(kind: Option<Kind>) -> String {
    match kind {
        Some(k) => format!(
            "an {} of this volume was interrupted and has not finished: run `{}` again to complete it",
            k.noun(),
            k.command()
        ),
        None => "this volume is fenced by an atrest conversion whose record is missing: run `atrest status` and the conversion command it names".into(),
    }
}

/// A conversion in progress, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ConversionStatus {
    /// encrypt, decrypt or rekey.
    pub kind: Kind,
    /// Bytes converted and committed.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What `status` shows: the header's facts, no key needed. Every string that came from the
/// header is escaped for a terminal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Volume UUID.
    pub uuid: String,
    /// dm-crypt cipher spec, `aes-xts-plain64`.
    pub cipher: String,
    /// The cipher by its standard name: `XTS-AES-128` (a 256-bit XTS key) or `XTS-AES-256`.
    pub cipher_name: String,
    /// XTS key bits (256 for XTS-AES-128, 512 for XTS-AES-256).
    pub key_bits: u32,
    /// Sector size.
    pub sector_size: u32,
    /// wrapped or direct.
    pub key_mode: KeyMode,
    /// KMIP key identifier.
    pub key_uid: String,
    /// Where the key came from (a hint).
    pub server_hint: Option<String>,
    /// Data offset in bytes.
    pub data_offset: u64,
    /// Plaintext size in bytes.
    pub data_size: u64,
    /// Added to every sector's tweak, in 512-byte units (dm-crypt's `iv_offset`; 0 for
    /// every volume atrest makes, so anything else is worth the operator's eye: the
    /// digest does not cover it).
    pub iv_tweak: u64,
    /// Mandatory requirements (a conversion in progress shows here).
    pub requirements: Vec<String>,
    /// A conversion in progress.
    pub conversion: Option<ConversionStatus>,
    /// A damaged header copy, if any.
    pub damaged_copy: Option<String>,
    /// seqid (cryptsetup's "Epoch").
    pub seqid: u64,
}

/// "XTS-AES-128 (256-bit XTS key)": how the cipher is named everywhere atrest prints it.
pub fn cipher_text(key_bits: u32) -> String {
    format!("XTS-AES-{} ({key_bits}-bit XTS key)", key_bits / 2)
}

fn io(offset: u64) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |source| VolumeError::Io { offset, source }
}

/// Formats `dev` as a new, empty atrest volume. `kmip_secret` is the key created on the
/// KMIP server: in wrapped mode the passphrase of the keyslot, in direct mode the volume
/// key itself.
pub fn format(
    dev: &dyn BlockBackend,
    kmip_secret: &[u8],
    opts: &FormatOptions,
) -> Result<(), VolumeError> {
    let mut h = new_header(dev, kmip_secret, opts)?;
    header::write(dev, &mut h)?;
    Ok(())
}

/// Builds the header of a new volume and writes its keyslot (but not the header itself, so
/// a conversion can add its state first).
pub(crate) fn new_header(
    dev: &dyn BlockBackend,
    kmip_secret: &[u8],
    opts: &FormatOptions,
) -> Result<Header, VolumeError> {
    if ![512, 4096].contains(&opts.sector_size) {
        return Err(VolumeError::Invalid(format!(
            "sector size {} (use 512 or 4096)",
            opts.sector_size
        )));
    }
    let size = dev.len().map_err(io(0))?;
    if opts.detached && size < DATA_OFFSET {
        return Err(VolumeError::Invalid(format!(
            "a detached header needs {DATA_OFFSET} bytes (header copies, keyslots, journal); this one has {size}"
        )));
    }
    let data_size = opts
        .data_size
        .unwrap_or_else(|| size.saturating_sub(DATA_OFFSET));
    if !opts.detached && (data_size < u64::from(opts.sector_size) || DATA_OFFSET + data_size > size)
    {
        return Err(VolumeError::Invalid(format!(
            "the device holds {size} bytes; an atrest volume needs the {DATA_OFFSET}-byte header area and at least one sector of data"
        )));
    }
    if !opts.detached && !data_size.is_multiple_of(u64::from(opts.sector_size)) {
        return Err(VolumeError::Invalid(format!(
            "the data area ({data_size} bytes) is not a whole number of {}-byte sectors",
            opts.sector_size
        )));
    }
    let (volume_key, keyslots) = match opts.mode {
        KeyMode::Direct => {
            if kmip_secret.len() != 32 && kmip_secret.len() != 64 {
                return Err(VolumeError::Invalid(format!(
                    "direct mode needs a 256- or 512-bit KMIP key, got {} bits",
                    kmip_secret.len() * 8
                )));
            }
            (Zeroizing::new(kmip_secret.to_vec()), Vec::new())
        }
        KeyMode::Wrapped => {
            let mut k = Zeroizing::new(vec![0u8; opts.volume_key_len]);
            crate::random::fill(&mut k)?;
            (k, vec!["0".to_owned()])
        }
    };
    // Refuse bad keys (equal halves) before anything is written.
    Xts::new(&volume_key).map_err(|e| VolumeError::Invalid(e.to_string()))?;
    let keyslots_offset = crate::layout::SLOT_AREAS[0];
    let mut slots = std::collections::BTreeMap::new();
    if opts.mode == KeyMode::Wrapped {
        slots.insert(
            "0".to_owned(),
            keys::make_keyslot(dev, &volume_key, kmip_secret, keyslots_offset)?,
        );
    }
    // The token names the keyslot its KMIP secret opens (none in direct mode), for
    // cryptsetup's token plugins.
    let mut token = tok::new(&opts.key_uid, opts.mode, opts.server_hint.as_deref());
    token.keyslots = slots.keys().cloned().collect();
    let metadata = Metadata {
        keyslots: slots,
        tokens: [("0".to_owned(), token)].into(),
        segments: [(
            "0".to_owned(),
            Segment {
                kind: "crypt".into(),
                offset: if opts.detached { 0 } else { DATA_OFFSET },
                size: opts
                    .data_size
                    .map_or_else(|| "dynamic".into(), |n| n.to_string()),
                iv_tweak: Some("0".into()),
                encryption: Some("aes-xts-plain64".into()),
                sector_size: Some(opts.sector_size),
                extra: Map::new(),
            },
        )]
        .into(),
        digests: [(
            "0".to_owned(),
            keys::make_digest(&volume_key, keyslots, vec!["0".into()])?,
        )]
        .into(),
        config: Config {
            json_size: HDR_SIZE - BINARY_SIZE as u64,
            keyslots_size: DATA_OFFSET - keyslots_offset,
            flags: Vec::new(),
            requirements: None,
            extra: Map::new(),
        },
        extra: Map::new(),
        opaque: Default::default(),
    };
    Ok(Header {
        binary: BinaryHeader {
            secondary: false,
            hdr_size: HDR_SIZE,
            seqid: 0,
            label: String::new(),
            checksum_alg: "sha256".into(),
            salt: [0; 64],
            uuid: uuid::Uuid::new_v4().to_string(),
            subsystem: "atrest".into(),
            hdr_offset: 0,
            csum: [0; 64],
        },
        metadata,
    })
}

/// The sizes of the devices, for validating a header against them.
pub(crate) fn geometry(
    hdr: &dyn BlockBackend,
    data: &dyn BlockBackend,
    detached: bool,
) -> Result<Geometry, VolumeError> {
    let data_len = data.len().map_err(io(0))?;
    let header_len = if detached {
        hdr.len().map_err(io(0))?
    } else {
        data_len
    };
    Ok(Geometry {
        header_len,
        data_len,
        detached,
    })
}

/// Reads the header and validates it against the devices: the only way the crate gets
/// at a header's facts.
pub(crate) fn read_valid(
    hdr: &dyn BlockBackend,
    data: &dyn BlockBackend,
    detached: bool,
) -> Result<(header::Read, Layout), VolumeError> {
    let read = header::read(hdr)?;
    let layout = validate::validate(&read.header, geometry(hdr, data, detached)?)?;
    Ok((read, layout))
}

/// The header's facts, for `atrest status`.
pub fn status(dev: &dyn BlockBackend) -> Result<Status, VolumeError> {
    status_of(dev, dev, false)
}

/// [`status`] of a volume whose header is on `hdr` (a detached header file) and data on
/// `data`.
pub fn status_detached(
    hdr: &dyn BlockBackend,
    data: &dyn BlockBackend,
) -> Result<Status, VolumeError> {
    status_of(hdr, data, true)
}

fn status_of(
    hdr: &dyn BlockBackend,
    data: &dyn BlockBackend,
    detached: bool,
) -> Result<Status, VolumeError> {
    use crate::text::shown;
    let (read, layout) = read_valid(hdr, data, detached)?;
    let m = &read.header.metadata;
    let token = layout.token.as_ref().ok_or(VolumeError::NoToken)?;
    // The volume key's size: the keyslot's in wrapped mode; in direct mode the KMIP key is
    // the volume key, and KMIP AES keys are 256 bits.
    let key_bits = m
        .digests
        .get(&layout.digest)
        .and_then(|d| d.keyslots.first())
        .and_then(|k| m.keyslots.get(k))
        .map_or(256, |k| k.key_size * 8);
    Ok(Status {
        uuid: shown(&read.header.binary.uuid).into_owned(),
        cipher: "aes-xts-plain64".into(),
        cipher_name: format!("XTS-AES-{}", key_bits / 2),
        key_bits,
        sector_size: layout.data.sector_size,
        key_mode: token.key_mode,
        key_uid: shown(&token.key_uid).into_owned(),
        server_hint: token.server_hint.as_deref().map(|h| shown(h).into_owned()),
        data_offset: layout.data.offset,
        data_size: layout.data.size,
        iv_tweak: layout.data.iv_tweak,
        requirements: m
            .config
            .requirements
            .as_ref()
            .map(|r| r.mandatory.iter().map(|x| shown(x).into_owned()).collect())
            .unwrap_or_default(),
        conversion: layout.conversion().map(|s| ConversionStatus {
            kind: s.conversion.kind(),
            done: s.conversion.done(),
            total: s.conversion.size(),
        }),
        damaged_copy: read.damaged.map(|(w, why)| format!("{w}: {why}")),
        seqid: read.header.binary.seqid,
    })
}

/// The volume key of digest `digest_id`, from the KMIP secret: the secret itself (direct
/// mode) or what it opens in one of the digest's keyslots (wrapped). The metadata has
/// been validated.
pub(crate) fn volume_key(
    dev: &dyn BlockBackend,
    m: &Metadata,
    digest_id: &str,
    kmip_secret: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VolumeError> {
    let digest = m
        .digests
        .get(digest_id)
        .ok_or_else(|| VolumeError::Invalid(format!("no digest {digest_id}")))?;
    if keys::verify(digest, kmip_secret)? {
        return Ok(Zeroizing::new(kmip_secret.to_vec()));
    }
    for id in &digest.keyslots {
        let Some(slot) = m.keyslots.get(id) else {
            continue;
        };
        // A keyslot atrest cannot open (argon2) is skipped, as cryptsetup skips a slot
        // a passphrase does not open; only if none opens is the key wrong.
        let candidate = match keys::open_keyslot(dev, slot, kmip_secret) {
            Ok(c) => c,
            Err(Luks2Error::Unsupported { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if keys::verify(digest, &candidate)? {
            return Ok(candidate);
        }
    }
    Err(VolumeError::WrongKey)
}

/// Runs `f` on a buffer of `len` bytes that this thread keeps for the next request (a
/// write is encrypted into it, a partial sector read into it). It holds data, never keys,
/// so it is not cleared; reusing it saves an allocation per request, which a hardened
/// process pays for twice (glibc wipes what is allocated and freed).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Larger requests get a buffer of their own, not kept.
    const KEEP: usize = 4 << 20;
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut b) if len <= KEEP => {
            if b.len() < len {
                b.resize(len, 0);
            }
            f(&mut b[..len])
        }
        _ => f(&mut vec![0u8; len]),
    })
}

/// The key schedule of `key`, in locked pages left out of core dumps (`secmem`), zeroed
/// when dropped.
pub(crate) fn key_schedule(key: &[u8]) -> Result<secmem::Locked<Xts>, VolumeError> {
    let xts = Xts::new(key).map_err(|e| VolumeError::Invalid(e.to_string()))?;
    Ok(secmem::Locked::new(xts)?)
}

/// An unlocked volume: reads and writes plaintext. The key schedule lives in locked pages
/// left out of core dumps, and is zeroed on drop. A plaintext volume served as it is
/// ([`Unlocked::plaintext`]) has no key: its "cipher" is the identity.
///
/// While a conversion runs with the volume in use (`convert::run_online`: a deep rekey,
/// or an encrypt or decrypt with a detached header, where the data does not move), it
/// holds both sides and the conversion's boundary: sectors below it are on the new side,
/// the rest on the old. Every read and write holds the read side of that state for its
/// duration; each conversion step holds the write side, so no I/O sees a hot zone half
/// rewritten, and the boundary moves when the step is committed.
pub struct Unlocked {
    dev: Arc<dyn BlockBackend>,
    pub(crate) keys: std::sync::RwLock<VolumeKeys>,
    pub(crate) data: DataArea,
    repaired: Option<String>,
    writes: crate::range_lock::RangeLock,
}

/// How one side of a volume's sectors is stored.
pub(crate) enum Side {
    /// As it is (a plaintext volume, or the plaintext side of an encrypt or decrypt).
    Plain,
    /// Under XTS with this key schedule, sector size and first tweak.
    Xts {
        xts: secmem::Locked<Xts>,
        sector_size: u32,
        iv_tweak: u64,
    },
}

impl Side {
    /// The side of a volume key on `data`.
    pub(crate) fn xts(xts: secmem::Locked<Xts>, data: &DataArea) -> Self {
        Self::Xts {
            xts,
            sector_size: data.sector_size,
            iv_tweak: data.iv_tweak,
        }
    }

    fn sector_size(&self) -> u64 {
        match self {
            Self::Plain => 512,
            Self::Xts { sector_size, .. } => u64::from(*sector_size),
        }
    }

    /// `buf` holds whole sectors from data byte `pos`.
    fn decrypt(&self, buf: &mut [u8], pos: u64) {
        if let Self::Xts {
            xts,
            sector_size,
            iv_tweak,
        } = self
        {
            xts.decrypt_serial(buf, *sector_size as usize, iv_tweak + pos / 512);
        }
    }

    fn encrypt(&self, buf: &mut [u8], pos: u64) {
        if let Self::Xts {
            xts,
            sector_size,
            iv_tweak,
        } = self
        {
            xts.encrypt_serial(buf, *sector_size as usize, iv_tweak + pos / 512);
        }
    }
}

/// The sides an unlocked volume reads and writes with.
pub(crate) struct VolumeKeys {
    /// The volume's side (the old one while a conversion runs).
    pub(crate) current: Side,
    /// A conversion under way: the side it converts to, and how far (bytes of data) it has
    /// come.
    pub(crate) next: Option<(Side, u64)>,
    /// Set when a conversion step failed part-way: no I/O until the volume is reopened.
    pub(crate) halted: Option<String>,
}

/// The largest sector size: what the write lock is aligned to, whatever the sides are.
const MAX_SECTOR: u64 = 4096;

impl VolumeKeys {
    /// The parts of `[start, end)` and the side each is on.
    fn parts(&self, start: u64, end: u64) -> [(u64, u64, &Side); 2] {
        match &self.next {
            Some((new, boundary)) => {
                let b = (*boundary).clamp(start, end);
                [(start, b, new), (b, end, &self.current)]
            }
            None => [(start, end, &self.current), (end, end, &self.current)],
        }
    }

    /// The unit reads and writes are aligned to: the larger sector size of the two sides.
    fn unit(&self) -> u64 {
        let next = self.next.as_ref().map_or(512, |(s, _)| s.sector_size());
        self.current.sector_size().max(next)
    }

    fn usable(&self) -> Result<(), VolumeError> {
        match &self.halted {
            Some(why) => Err(VolumeError::Halted(why.clone())),
            None => Ok(()),
        }
    }
}

/// Unlocks `dev` with the secret fetched from KMIP. The header is validated and the key
/// checked against its digest before anything else happens; a wrong key writes nothing.
pub fn unlock(dev: Arc<dyn BlockBackend>, kmip_secret: &[u8]) -> Result<Unlocked, VolumeError> {
    let hdr = Arc::clone(&dev);
    unlock_with(hdr.as_ref(), dev, kmip_secret, false)
}

/// [`unlock`] of a volume whose header is on `header` (a detached header file) and data on
/// `dev`.
pub fn unlock_detached(
    hdr: &dyn BlockBackend,
    dev: Arc<dyn BlockBackend>,
    kmip_secret: &[u8],
) -> Result<Unlocked, VolumeError> {
    unlock_with(hdr, dev, kmip_secret, true)
}

fn unlock_with(
    hdr: &dyn BlockBackend,
    dev: Arc<dyn BlockBackend>,
    kmip_secret: &[u8],
    detached: bool,
) -> Result<Unlocked, VolumeError> {
    let (read, layout) = read_valid(hdr, dev.as_ref(), detached)?;
    if let Some(kind) = layout.in_progress() {
        return Err(VolumeError::ConversionInProgress { kind });
    }
    let volume_key = volume_key(hdr, &read.header.metadata, &layout.digest, kmip_secret)?;
    let xts = key_schedule(&volume_key)?;
    // As cryptsetup does on a writable device: once the key is proven, rewrite a damaged
    // header copy from the good one, so one more fault cannot cost the volume.
    let repaired = match read.damaged {
        Some((which, why)) => {
            let mut h = read.header;
            header::write(hdr, &mut h)?;
            Some(format!(
                "the {which} header copy was damaged ({why}) and has been rewritten"
            ))
        }
        None => None,
    };
    Ok(Unlocked {
        dev,
        keys: std::sync::RwLock::new(VolumeKeys {
            current: Side::xts(xts, &layout.data),
            next: None,
            halted: None,
        }),
        data: layout.data,
        repaired,
        writes: crate::range_lock::RangeLock::default(),
    })
}

impl Unlocked {
    /// A plaintext device served as it is, `size` bytes from its start: no key, and every
    /// sector read and written unchanged, until an encrypt with a detached header makes it
    /// follow the conversion (`convert::follow`).
    pub fn plaintext(dev: Arc<dyn BlockBackend>, size: u64) -> Self {
        Unlocked {
            dev,
            keys: std::sync::RwLock::new(VolumeKeys {
                current: Side::Plain,
                next: None,
                halted: None,
            }),
            data: DataArea {
                offset: 0,
                size,
                sector_size: 512,
                iv_tweak: 0,
            },
            repaired: None,
            writes: crate::range_lock::RangeLock::default(),
        }
    }

    /// True when the volume holds plaintext (no key), and no conversion is under way.
    pub fn is_plaintext(&self) -> bool {
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        matches!(k.current, Side::Plain) && k.next.is_none()
    }

    /// True while the volume follows a conversion (between `convert::follow` and the end).
    pub fn converting(&self) -> bool {
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        k.next.is_some()
    }

    /// Why the volume stopped taking I/O, if it did (a conversion step failed part-way).
    pub fn halted(&self) -> Option<String> {
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        k.halted.clone()
    }

    /// Plaintext size in bytes.
    pub fn size(&self) -> u64 {
        self.data.size
    }

    /// Sector size.
    pub fn sector_size(&self) -> u32 {
        self.data.sector_size
    }

    /// What unlocking repaired, if anything (for the caller to report).
    pub fn repaired(&self) -> Option<&str> {
        self.repaired.as_deref()
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), VolumeError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.data.size)
        {
            return Err(VolumeError::OutOfRange {
                offset,
                len,
                size: self.data.size,
            });
        }
        Ok(())
    }

    fn keys(&self) -> Result<std::sync::RwLockReadGuard<'_, VolumeKeys>, VolumeError> {
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        k.usable()?;
        Ok(k)
    }

    /// Reads whole units `[start, start+buf.len())` and decrypts them, each sector on the
    /// side it is on now (`keys` held by the caller).
    fn read_sectors(
        &self,
        keys: &VolumeKeys,
        buf: &mut [u8],
        start: u64,
    ) -> Result<(), VolumeError> {
        let at = self.data.offset + start;
        self.dev.read_at(buf, at).map_err(io(at))?;
        for (from, to, side) in keys.parts(start, start + buf.len() as u64) {
            if to > from {
                side.decrypt(
                    &mut buf[(from - start) as usize..(to - start) as usize],
                    from,
                );
            }
        }
        Ok(())
    }

    /// Reads plaintext at any byte offset and length.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), VolumeError> {
        self.check(offset, buf.len())?;
        let keys = self.keys()?;
        let ss = keys.unit();
        let start = offset - offset % ss;
        let end = (offset + buf.len() as u64).div_ceil(ss) * ss;
        if start == offset && end == offset + buf.len() as u64 {
            return self.read_sectors(&keys, buf, start);
        }
        with_scratch((end - start) as usize, |tmp| {
            self.read_sectors(&keys, tmp, start)?;
            let skip = (offset - start) as usize;
            buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
            Ok(())
        })
    }

    /// Writes plaintext at any byte offset and length. Partial sectors are read, merged and
    /// rewritten while the sectors are locked against other writes, so two writes to
    /// different bytes of one sector never undo each other.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), VolumeError> {
        self.check(offset, buf.len())?;
        // Locked in units of the largest sector size, before the sides are known: a
        // conversion may change the unit, never beyond this.
        let end = offset + buf.len() as u64;
        let _held = self.writes.lock(
            offset - offset % MAX_SECTOR,
            end.div_ceil(MAX_SECTOR) * MAX_SECTOR,
        );
        let keys = self.keys()?;
        let ss = keys.unit();
        let start = offset - offset % ss;
        let end = end.div_ceil(ss) * ss;
        with_scratch((end - start) as usize, |tmp| {
            let skip = (offset - start) as usize;
            if skip != 0 || end != offset + buf.len() as u64 {
                self.read_sectors(&keys, tmp, start)?;
            }
            tmp[skip..skip + buf.len()].copy_from_slice(buf);
            for (from, to, side) in keys.parts(start, end) {
                if to > from {
                    side.encrypt(
                        &mut tmp[(from - start) as usize..(to - start) as usize],
                        from,
                    );
                }
            }
            let at = self.data.offset + start;
            self.dev.write_at(tmp, at).map_err(io(at))
        })
    }

    /// Gives the whole sectors inside `[offset, offset + len)` back to the storage (a hole
    /// in an image file); they then read as garbage, as trimmed blocks may. Reveals to
    /// whoever sees the disk which blocks are free, so exports offer it only on request.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.check(offset, len as usize)?;
        let _held = self.writes.lock(
            offset - offset % MAX_SECTOR,
            (offset + len).div_ceil(MAX_SECTOR) * MAX_SECTOR,
        );
        // Not while a conversion step rewrites a hot zone it could overlap.
        let keys = self.keys()?;
        let ss = keys.unit();
        let start = offset.div_ceil(ss) * ss;
        let end = (offset + len) / ss * ss;
        if end <= start {
            return Ok(());
        }
        let at = self.data.offset + start;
        self.dev.discard(at, end - start).map_err(io(at))
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<(), VolumeError> {
        self.dev.sync().map_err(io(0))
    }
}

//! Formatting a volume, reading what its header says, unlocking it with the secret from
//! KMIP, and reading and writing its plaintext at any byte offset.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::backend::BlockBackend;
use crate::luks2::binary::{BinaryHeader, BINARY_SIZE};
use crate::luks2::header::{self, Header};
use crate::luks2::metadata::{Config, Metadata, Segment, Token};
use crate::luks2::{keys, Luks2Error, TOKEN_TYPE};
use crate::xts::Xts;

/// How the KMIP key relates to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// The KMIP secret opens a keyslot holding a random volume key (rotation = rewrap).
    Wrapped,
    /// The KMIP key is the volume key; the header has no keyslot.
    Direct,
}

impl KeyMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Wrapped => "wrapped",
            Self::Direct => "direct",
        }
    }
}

/// Header size atrest writes (cryptsetup's default: 16 KiB, two copies).
pub const HDR_SIZE: u64 = 0x4000;
/// Data offset atrest writes (cryptsetup's default, leaving room for keyslots).
pub const DATA_OFFSET: u64 = 16 * 1024 * 1024;

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
    /// Not an atrest volume (no atrest token).
    #[error("this LUKS2 volume has no atrest token: it was not made by atrest (or the token was removed)")]
    NoToken,
    /// Read or write failed.
    #[error("I/O at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// A conversion (encrypt, decrypt, deep rekey) has not finished.
    #[error("a {kind} of this volume was interrupted and has not finished: run `atrest {kind}` again to complete it")]
    ConversionInProgress {
        /// encrypt, decrypt or rekey.
        kind: String,
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
}

/// What `status` shows: the header's facts, no key needed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Volume UUID.
    pub uuid: String,
    /// Cipher spec and key size in bits, e.g. `aes-xts-plain64` / 256.
    pub cipher: String,
    /// Volume key bits.
    pub key_bits: u32,
    /// Sector size.
    pub sector_size: u32,
    /// wrapped or direct.
    pub key_mode: String,
    /// KMIP key identifier.
    pub key_uid: String,
    /// Where the key came from (a hint).
    pub server_hint: Option<String>,
    /// Data offset in bytes.
    pub data_offset: u64,
    /// Plaintext size in bytes.
    pub data_size: u64,
    /// Mandatory requirements (a conversion in progress shows here).
    pub requirements: Vec<String>,
    /// A conversion in progress: its kind, bytes done and total.
    pub conversion: Option<(String, u64, u64)>,
    /// A damaged header copy, if any.
    pub damaged_copy: Option<String>,
    /// seqid (cryptsetup's "Epoch").
    pub seqid: u64,
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
            openssl::rand::rand_bytes(&mut k).expect("system random number generator");
            (k, vec!["0".to_owned()])
        }
    };
    // Refuse bad keys (equal halves) before anything is written.
    Xts::new(&volume_key).map_err(|e| VolumeError::Invalid(e.to_string()))?;
    let keyslots_offset = 2 * HDR_SIZE;
    let mut slots = std::collections::BTreeMap::new();
    if opts.mode == KeyMode::Wrapped {
        slots.insert(
            "0".to_owned(),
            keys::make_keyslot(dev, &volume_key, kmip_secret, keyslots_offset)?,
        );
    }
    let mut token = Map::new();
    token.insert("key_uid".into(), json!(opts.key_uid));
    token.insert("key_mode".into(), json!(opts.mode.as_str()));
    if let Some(h) = &opts.server_hint {
        token.insert("kmip_server_hint".into(), json!(h));
    }
    let metadata = Metadata {
        keyslots: slots,
        tokens: [(
            "0".to_owned(),
            Token {
                kind: TOKEN_TYPE.into(),
                keyslots: Vec::new(),
                extra: token,
            },
        )]
        .into(),
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
            keys::make_digest(&volume_key, keyslots, vec!["0".into()]),
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

pub(crate) fn atrest_token(m: &Metadata) -> Option<&Token> {
    m.tokens.values().find(|t| t.kind == TOKEN_TYPE)
}

pub(crate) fn crypt_segment(m: &Metadata) -> Result<(&Segment, u32), VolumeError> {
    let s = m
        .segments
        .get("0")
        .filter(|s| s.kind == "crypt")
        .ok_or_else(|| VolumeError::Invalid("segment 0 is not a crypt segment".into()))?;
    if s.encryption.as_deref() != Some("aes-xts-plain64") {
        return Err(Luks2Error::Unsupported {
            what: "cipher",
            value: s.encryption.clone().unwrap_or_default(),
        }
        .into());
    }
    let ss = s.sector_size.unwrap_or(512);
    if ![512, 1024, 2048, 4096].contains(&ss) || s.offset % 512 != 0 {
        return Err(VolumeError::Invalid(format!(
            "segment geometry: sector size {ss}, offset {}",
            s.offset
        )));
    }
    Ok((s, ss))
}

/// The header's facts, for `atrest status`.
pub fn status(dev: &dyn BlockBackend) -> Result<Status, VolumeError> {
    status_detached(dev, dev)
}

/// [`status`] of a volume whose header is on `header` and data on `data`.
pub fn status_detached(
    hdr: &dyn BlockBackend,
    data: &dyn BlockBackend,
) -> Result<Status, VolumeError> {
    let dev = hdr;
    let read = header::read(dev)?;
    let m = &read.header.metadata;
    let token = atrest_token(m).ok_or(VolumeError::NoToken)?;
    let (seg, sector_size) = crypt_segment(m)?;
    let key_bits = m
        .keyslots
        .values()
        .next()
        .map(|k| k.key_size * 8)
        .or_else(|| {
            token
                .extra
                .get("key_bits")
                .and_then(Value::as_u64)
                .map(|b| b as u32)
        })
        .unwrap_or(256);
    let data_size = segment_size(seg, data.len().map_err(io(0))?)?;
    let text = |k: &str| {
        token
            .extra
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(Status {
        uuid: read.header.binary.uuid.clone(),
        cipher: seg.encryption.clone().unwrap_or_default(),
        key_bits,
        sector_size,
        key_mode: text("key_mode").unwrap_or_else(|| "unknown".into()),
        key_uid: text("key_uid").unwrap_or_default(),
        server_hint: text("kmip_server_hint"),
        data_offset: seg.offset,
        data_size,
        requirements: m
            .config
            .requirements
            .as_ref()
            .map(|r| r.mandatory.clone())
            .unwrap_or_default(),
        conversion: crate::convert::state::read(m)
            .ok()
            .flatten()
            .map(|c| (c.kind.as_str().to_owned(), c.done, c.size)),
        damaged_copy: read.damaged.map(|(w, why)| format!("{w}: {why}")),
        seqid: read.header.binary.seqid,
    })
}

/// The volume key of digest `digest_id`, from the KMIP secret: the secret itself (direct
/// mode) or what it opens in one of the digest's keyslots (wrapped).
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
        let candidate = keys::open_keyslot(dev, slot, kmip_secret)?;
        if keys::verify(digest, &candidate)? {
            return Ok(candidate);
        }
    }
    Err(VolumeError::WrongKey)
}

/// The id of the digest bound to segment 0.
pub(crate) fn segment_digest(m: &Metadata) -> Result<String, VolumeError> {
    m.digests
        .iter()
        .find(|(_, d)| d.segments.iter().any(|s| s == "0"))
        .map(|(id, _)| id.clone())
        .ok_or_else(|| VolumeError::Invalid("no digest for segment 0".into()))
}

/// The data size of `seg` on a device of `total` bytes.
pub(crate) fn segment_size(seg: &Segment, total: u64) -> Result<u64, VolumeError> {
    match seg.size.as_str() {
        "dynamic" => Ok(total.saturating_sub(seg.offset)),
        n => n
            .parse()
            .map_err(|_| VolumeError::Invalid(format!("segment size {n:?}"))),
    }
}

/// An unlocked volume: reads and writes plaintext. The key schedule is zeroized on drop.
pub struct Unlocked {
    dev: Arc<dyn BlockBackend>,
    xts: Xts,
    data_offset: u64,
    sector_size: u32,
    size: u64,
    repaired: Option<String>,
}

/// Unlocks `dev` with the secret fetched from KMIP. The key is checked against the
/// header's digest before anything else happens; a wrong key writes nothing.
pub fn unlock(dev: Arc<dyn BlockBackend>, kmip_secret: &[u8]) -> Result<Unlocked, VolumeError> {
    let hdr = Arc::clone(&dev);
    unlock_detached(hdr.as_ref(), dev, kmip_secret)
}

/// [`unlock`] of a volume whose header is on `header` (a detached header file) and data on
/// `dev`.
pub fn unlock_detached(
    hdr: &dyn BlockBackend,
    dev: Arc<dyn BlockBackend>,
    kmip_secret: &[u8],
) -> Result<Unlocked, VolumeError> {
    let read = header::read(hdr)?;
    let m = &read.header.metadata;
    if let Some(kind) = crate::convert::state::in_progress(m) {
        return Err(VolumeError::ConversionInProgress { kind });
    }
    let (seg, sector_size) = crypt_segment(m)?;
    let volume_key = volume_key(hdr, m, &segment_digest(m)?, kmip_secret)?;
    let xts = Xts::new(&volume_key).map_err(|e| VolumeError::Invalid(e.to_string()))?;
    let total = dev.len().map_err(io(0))?;
    let size = segment_size(seg, total)?;
    let size = size - size % u64::from(sector_size);
    let data_offset = seg.offset;
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
        xts,
        data_offset,
        sector_size,
        size,
        repaired,
    })
}

impl Unlocked {
    /// Plaintext size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Sector size.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// What unlocking repaired, if anything (for the caller to report).
    pub fn repaired(&self) -> Option<&str> {
        self.repaired.as_deref()
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), VolumeError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(VolumeError::OutOfRange {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    /// Reads whole sectors `[start, start+buf.len())` (sector-aligned) and decrypts them.
    fn read_sectors(&self, buf: &mut [u8], start: u64) -> Result<(), VolumeError> {
        let at = self.data_offset + start;
        self.dev.read_at(buf, at).map_err(io(at))?;
        self.xts
            .decrypt(buf, self.sector_size as usize, start / 512);
        Ok(())
    }

    /// Reads plaintext at any byte offset and length.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), VolumeError> {
        self.check(offset, buf.len())?;
        let ss = u64::from(self.sector_size);
        let start = offset - offset % ss;
        let end = (offset + buf.len() as u64).div_ceil(ss) * ss;
        if start == offset && end == offset + buf.len() as u64 {
            return self.read_sectors(buf, start);
        }
        let mut tmp = Zeroizing::new(vec![0u8; (end - start) as usize]);
        self.read_sectors(&mut tmp, start)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
        Ok(())
    }

    /// Writes plaintext at any byte offset and length (partial sectors are read, merged and
    /// rewritten).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), VolumeError> {
        self.check(offset, buf.len())?;
        let ss = u64::from(self.sector_size);
        let start = offset - offset % ss;
        let end = (offset + buf.len() as u64).div_ceil(ss) * ss;
        let mut tmp = Zeroizing::new(vec![0u8; (end - start) as usize]);
        let skip = (offset - start) as usize;
        if skip != 0 || end != offset + buf.len() as u64 {
            self.read_sectors(&mut tmp, start)?;
        }
        tmp[skip..skip + buf.len()].copy_from_slice(buf);
        self.xts
            .encrypt(&mut tmp, self.sector_size as usize, start / 512);
        let at = self.data_offset + start;
        self.dev.write_at(&tmp, at).map_err(io(at))
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<(), VolumeError> {
        self.dev.sync().map_err(io(0))
    }
}

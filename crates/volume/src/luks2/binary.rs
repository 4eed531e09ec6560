//! The 4096-byte LUKS2 binary header (LUKS2 on-disk format §2.1; all integers big-endian,
//! strings NUL-terminated and zero-padded). Offsets are chained constants so no field can
//! overlap another by a typo.

use super::Luks2Error;

/// Size of the binary header block.
pub const BINARY_SIZE: usize = 4096;
pub(crate) const MAGIC_PRIMARY: [u8; 6] = *b"LUKS\xba\xbe";
pub(crate) const MAGIC_SECONDARY: [u8; 6] = *b"SKUL\xba\xbe";

const MAGIC: usize = 0;
const VERSION: usize = MAGIC + 6;
const HDR_SIZE: usize = VERSION + 2;
const SEQID: usize = HDR_SIZE + 8;
const LABEL: usize = SEQID + 8;
const CSUM_ALG: usize = LABEL + 48;
const SALT: usize = CSUM_ALG + 32;
const UUID: usize = SALT + 64;
const SUBSYSTEM: usize = UUID + 40;
const HDR_OFFSET: usize = SUBSYSTEM + 48;
const CSUM: usize = HDR_OFFSET + 8 + 184;
const CSUM_LEN: usize = 64;

/// hdr_size values the format allows (16 KiB to 4 MiB, powers of two).
pub const HDR_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

/// The fields of one binary header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryHeader {
    /// True for the secondary copy (`SKUL\xba\xbe`).
    pub secondary: bool,
    /// Binary header plus JSON area.
    pub hdr_size: u64,
    /// Increases with every write; the higher valid copy wins.
    pub seqid: u64,
    /// Label.
    pub label: String,
    /// Checksum algorithm (`sha256`).
    pub checksum_alg: String,
    /// Per-copy random salt.
    pub salt: [u8; 64],
    /// Volume UUID.
    pub uuid: String,
    /// Subsystem (owner) label.
    pub subsystem: String,
    /// Where this copy sits: 0 or hdr_size.
    pub hdr_offset: u64,
    /// Stored checksum.
    pub csum: [u8; CSUM_LEN],
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn put_text(out: &mut [u8], at: usize, len: usize, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(len - 1);
    out[at..at + n].copy_from_slice(&b[..n]);
}

impl BinaryHeader {
    /// Parses and checks the geometry fields of a binary header read at `offset`.
    pub fn parse(b: &[u8; BINARY_SIZE], offset: u64) -> Result<Self, Luks2Error> {
        let secondary = match &b[MAGIC..MAGIC + 6] {
            m if m == MAGIC_PRIMARY => false,
            m if m == MAGIC_SECONDARY => true,
            _ => return Err(Luks2Error::NotLuks { offset }),
        };
        let version = u16::from_be_bytes([b[VERSION], b[VERSION + 1]]);
        if version != 2 {
            return Err(Luks2Error::corrupt(
                &format!("version (copy at byte {offset})"),
                version,
                "atrest reads LUKS version 2",
            ));
        }
        let hdr_size = be64(b, HDR_SIZE);
        // Any size in the range reads; the metadata's json_size must then match it and be
        // one of HDR_SIZES (`conform`), as cryptsetup checks it.
        if !(HDR_SIZES[0]..=HDR_SIZES[HDR_SIZES.len() - 1]).contains(&hdr_size) {
            return Err(Luks2Error::corrupt(
                &format!("hdr_size (copy at byte {offset})"),
                hdr_size,
                "outside the sizes LUKS2 allows (16 KiB to 4 MiB)",
            ));
        }
        let hdr_offset = be64(b, HDR_OFFSET);
        // A copy must sit where it says: a moved copy could alias the other one.
        if hdr_offset != offset
            || (secondary && hdr_offset != hdr_size)
            || (!secondary && hdr_offset != 0)
        {
            return Err(Luks2Error::corrupt(
                &format!("hdr_offset (copy at byte {offset})"),
                hdr_offset,
                "a copy must sit where it says (0 or hdr_size): a moved copy could alias the other",
            ));
        }
        let checksum_alg = text(&b[CSUM_ALG..CSUM_ALG + 32]);
        // cryptsetup takes any hash OpenSSL knows by that name (it writes sha256).
        if b[CSUM_ALG..CSUM_ALG + 32].iter().all(|&c| c != 0) || digest(&checksum_alg).is_none() {
            return Err(Luks2Error::Unsupported {
                what: "checksum algorithm",
                value: crate::text::shown(&checksum_alg).into_owned(),
            });
        }
        let mut salt = [0u8; 64];
        salt.copy_from_slice(&b[SALT..SALT + 64]);
        let mut csum = [0u8; CSUM_LEN];
        csum.copy_from_slice(&b[CSUM..CSUM + CSUM_LEN]);
        Ok(Self {
            secondary,
            hdr_size,
            seqid: be64(b, SEQID),
            label: text(&b[LABEL..LABEL + 48]),
            checksum_alg,
            salt,
            uuid: text(&b[UUID..UUID + 40]),
            subsystem: text(&b[SUBSYSTEM..SUBSYSTEM + 48]),
            hdr_offset,
            csum,
        })
    }

    /// The 4096 bytes, with `csum` as given (zero while computing the checksum).
    pub fn to_bytes(&self, csum: &[u8; CSUM_LEN]) -> Vec<u8> {
        let mut b = vec![0u8; BINARY_SIZE];
        b[MAGIC..MAGIC + 6].copy_from_slice(if self.secondary {
            &MAGIC_SECONDARY
        } else {
            &MAGIC_PRIMARY
        });
        b[VERSION..VERSION + 2].copy_from_slice(&2u16.to_be_bytes());
        b[HDR_SIZE..HDR_SIZE + 8].copy_from_slice(&self.hdr_size.to_be_bytes());
        b[SEQID..SEQID + 8].copy_from_slice(&self.seqid.to_be_bytes());
        put_text(&mut b, LABEL, 48, &self.label);
        put_text(&mut b, CSUM_ALG, 32, &self.checksum_alg);
        b[SALT..SALT + 64].copy_from_slice(&self.salt);
        put_text(&mut b, UUID, 40, &self.uuid);
        put_text(&mut b, SUBSYSTEM, 48, &self.subsystem);
        b[HDR_OFFSET..HDR_OFFSET + 8].copy_from_slice(&self.hdr_offset.to_be_bytes());
        b[CSUM..CSUM + CSUM_LEN].copy_from_slice(csum);
        b
    }

    /// The checksum (`checksum_alg`, SHA-256 for what atrest writes) over this header with
    /// a zero checksum field and the whole JSON area, zero-padded to 64 bytes.
    pub fn checksum(&self, json_area: &[u8]) -> [u8; CSUM_LEN] {
        let mut out = [0u8; CSUM_LEN];
        let md = digest(&self.checksum_alg).unwrap_or_else(openssl::hash::MessageDigest::sha256);
        if let Ok(mut h) = openssl::hash::Hasher::new(md) {
            let ok =
                h.update(&self.to_bytes(&[0; CSUM_LEN])).is_ok() && h.update(json_area).is_ok();
            if let (true, Ok(d)) = (ok, h.finish()) {
                let n = d.len().min(CSUM_LEN);
                out[..n].copy_from_slice(&d[..n]);
            }
        }
        out
    }

    /// Whether `csum` is this header's checksum: as cryptsetup compares it, only the
    /// digest's own length counts (the rest of the 64-byte field is not covered).
    pub fn checksum_matches(&self, json_area: &[u8]) -> bool {
        let n = digest(&self.checksum_alg)
            .map_or(32, |m| m.size())
            .min(CSUM_LEN);
        self.checksum(json_area)[..n] == self.csum[..n]
    }
}

/// The hash named `name` in a header (case does not matter, as for cryptsetup through
/// OpenSSL; longer than a digest field could hold: none).
fn digest(name: &str) -> Option<openssl::hash::MessageDigest> {
    let lower = name.to_ascii_lowercase();
    let name = match lower.as_str() {
        "blake2b-512" => "blake2b512",
        "blake2s-256" => "blake2s256",
        other => other,
    };
    openssl::hash::MessageDigest::from_name(name).filter(|m| m.size() <= CSUM_LEN)
}

//! Both copies of the header: reading (each copy checked, the valid one with the higher
//! seqid chosen, damage reported) and writing (seqid+1, then the copy that does not hold
//! the newest header, then the one that does: cryptsetup's order, primary then secondary,
//! when both are equal; each as binary header without checksum, JSON area, binary header
//! with checksum, synced before the next copy starts; so the newest whole copy is never the
//! one being overwritten). Everything written before a header write is synced before it
//! starts.

use super::binary::{BinaryHeader, BINARY_SIZE, HDR_SIZES};
use super::metadata::Metadata;
use super::Luks2Error;
use crate::backend::BlockBackend;

/// A header, as read from (or to be written to) a device.
#[derive(Debug, Clone)]
pub struct Header {
    /// Fields of the binary header (of the chosen copy).
    pub binary: BinaryHeader,
    /// The JSON metadata.
    pub metadata: Metadata,
}

/// What reading found.
#[derive(Debug)]
pub struct Read {
    /// The header of the valid copy with the higher seqid.
    pub header: Header,
    /// A damaged copy, if one was: "primary" or "secondary", and why.
    pub damaged: Option<(&'static str, String)>,
}

/// A copy's binary header and JSON area, once its binary fields and checksum hold
/// (cryptsetup's first stage: a copy that fails here makes it look for the other copy at
/// every size; one that fails only its metadata does not).
fn read_binary(dev: &dyn BlockBackend, offset: u64) -> Result<(BinaryHeader, Vec<u8>), Luks2Error> {
    let io = |source| Luks2Error::Io { offset, source };
    let mut b = [0u8; BINARY_SIZE];
    dev.read_at(&mut b, offset).map_err(io)?;
    let bin = BinaryHeader::parse(&b, offset)?;
    let mut json = vec![0u8; (bin.hdr_size as usize) - BINARY_SIZE];
    dev.read_at(&mut json, offset + BINARY_SIZE as u64)
        .map_err(io)?;
    if !bin.checksum_matches(&json) {
        return Err(Luks2Error::Checksum { offset });
    }
    Ok((bin, json))
}

/// The metadata in a copy's JSON area, once it is LUKS2 metadata by cryptsetup's rules
/// ([`super::conform`]).
fn parse_area(bin: &BinaryHeader, json: &[u8]) -> Result<Metadata, Luks2Error> {
    let offset = bin.hdr_offset;
    let area = |why: &str| {
        Luks2Error::corrupt(
            &format!("JSON area (copy at byte {offset})"),
            "(bytes)",
            why,
        )
    };
    if json.first() != Some(&b'{') {
        return Err(area("does not begin with '{'"));
    }
    let Some(end) = json.iter().position(|&c| c == 0) else {
        return Err(area("the JSON text is not followed by a NUL byte"));
    };
    if json[end..].iter().any(|&c| c != 0) {
        return Err(area("bytes other than zero follow the JSON text"));
    }
    let text = &json[..end];
    let parse_error = |e: serde_json::Error| Luks2Error::Json {
        offset,
        message: e.to_string(),
    };
    let ordered: super::conform::J = serde_json::from_slice(text).map_err(parse_error)?;
    super::conform::check(&ordered, json.len() as u64).map_err(|e| match e {
        Luks2Error::Corrupt { field, value, why } => Luks2Error::Corrupt {
            field: format!("{field} (copy at byte {offset})"),
            value,
            why,
        },
        e => e,
    })?;
    // Through a Value, so that a key given twice keeps its last value (json-c's rule).
    let value: serde_json::Value = serde_json::from_slice(text).map_err(parse_error)?;
    serde_json::from_value(value).map_err(parse_error)
}

fn read_copy(dev: &dyn BlockBackend, offset: u64) -> Result<(BinaryHeader, Metadata), Luks2Error> {
    let (bin, json) = read_binary(dev, offset)?;
    let m = parse_area(&bin, &json)?;
    Ok((bin, m))
}

/// Reads the header of `dev`: the copy cryptsetup would choose, by the same rules.
pub fn read(dev: &dyn BlockBackend) -> Result<Read, Luks2Error> {
    // cryptsetup's shared lock: never a header it is halfway through writing.
    let _lock = dev
        .metadata_lock(false)
        .map_err(|source| Luks2Error::Io { offset: 0, source })?;
    // A primary with the LUKS magic names the version: 1 is LUKS1, and the secondary is
    // never looked at (nor is it for a version above 2).
    let mut head = [0u8; 8];
    dev.read_at(&mut head, 0)
        .map_err(|source| Luks2Error::Io { offset: 0, source })?;
    if head[..6] == super::binary::MAGIC_PRIMARY {
        match u16::from_be_bytes([head[6], head[7]]) {
            1 => {
                return Err(Luks2Error::Unsupported {
                    what: "LUKS version",
                    value: "1 (a LUKS1 volume: convert it with `cryptsetup convert --type luks2`)"
                        .into(),
                })
            }
            v if v > 2 => {
                return Err(Luks2Error::Unsupported {
                    what: "LUKS version",
                    value: v.to_string(),
                })
            }
            _ => {}
        }
    }
    // The secondary sits at the primary's hdr_size; only when the primary's binary header
    // or checksum fails is every size tried (the first copy found there is the one).
    let (primary, secondary) = match read_binary(dev, 0) {
        Ok((bin, json)) => {
            let secondary = read_copy(dev, bin.hdr_size);
            (parse_area(&bin, &json).map(|m| (bin, m)), secondary)
        }
        Err(e) => {
            let found = HDR_SIZES.iter().find_map(|&o| read_binary(dev, o).ok());
            let secondary = match found {
                Some((bin, json)) => parse_area(&bin, &json).map(|m| (bin, m)),
                None => Err(Luks2Error::NotLuks { offset: 0x4000 }),
            };
            (Err(e), secondary)
        }
    };
    let chosen = match (primary, secondary) {
        (Ok(p), Ok(s)) => {
            let (bin, metadata) = if s.0.seqid > p.0.seqid { s } else { p };
            Read {
                header: Header {
                    binary: bin,
                    metadata,
                },
                damaged: None,
            }
        }
        (Ok((bin, metadata)), Err(e)) => Read {
            header: Header {
                binary: bin,
                metadata,
            },
            damaged: Some(("secondary", e.to_string())),
        },
        // Even with no primary magic at all, a valid secondary makes a damaged LUKS2 volume.
        (Err(e), Ok((bin, metadata))) => Read {
            header: Header {
                binary: bin,
                metadata,
            },
            damaged: Some(("primary", e.to_string())),
        },
        (Err(Luks2Error::NotLuks { .. }), Err(Luks2Error::NotLuks { .. })) => {
            return Err(Luks2Error::NotLuks { offset: 0 })
        }
        (Err(p), Err(s)) => {
            return Err(Luks2Error::BothCopiesDamaged {
                primary: p.to_string(),
                secondary: s.to_string(),
            })
        }
    };
    // The copy chosen, with its keyslots area, must fit the device (no falling back to
    // the other copy: cryptsetup's rule).
    let c = &chosen.header.metadata.config;
    let need = c
        .json_size
        .saturating_add(BINARY_SIZE as u64)
        .saturating_mul(2)
        .saturating_add(c.keyslots_size);
    let len = dev
        .len()
        .map_err(|source| Luks2Error::Io { offset: 0, source })?;
    if need > len {
        return Err(Luks2Error::corrupt(
            "config.keyslots_size",
            c.keyslots_size,
            format!("the header copies and keyslots area end at byte {need}, past the device's {len} bytes"),
        ));
    }
    Ok(chosen)
}

/// Writes both copies of `header` with seqid increased by one (which it updates). A header
/// that would not be LUKS2 by cryptsetup's rules is refused, and nothing is written.
pub fn write(dev: &dyn BlockBackend, header: &mut Header) -> Result<(), Luks2Error> {
    write_with(dev, header, true)
}

/// [`write`] without the check: what an attacker with a disk writer can do, for the tests
/// that play one (`volume/tests/hardening.rs`). Test builds only.
#[cfg(feature = "test-support")]
pub fn write_unchecked(dev: &dyn BlockBackend, header: &mut Header) -> Result<(), Luks2Error> {
    write_with(dev, header, false)
}

fn write_with(dev: &dyn BlockBackend, header: &mut Header, check: bool) -> Result<(), Luks2Error> {
    header.binary.seqid = header.binary.seqid.checked_add(1).ok_or_else(|| {
        Luks2Error::corrupt(
            "seqid",
            header.binary.seqid,
            "cannot be increased any further",
        )
    })?;
    let hdr_size = header.binary.hdr_size;
    header.metadata.config.json_size = hdr_size - BINARY_SIZE as u64;
    let mut json = serde_json::to_vec(&header.metadata).map_err(|e| Luks2Error::Json {
        offset: 0,
        message: e.to_string(),
    })?;
    if json.len() >= (hdr_size as usize) - BINARY_SIZE {
        return Err(Luks2Error::corrupt(
            "JSON area",
            format!("{} bytes", json.len()),
            format!("does not fit in {} bytes", hdr_size as usize - BINARY_SIZE),
        ));
    }
    // What is about to be committed must read back as LUKS2 (cryptsetup's rules): a bug
    // here must fail the write, not leave a header neither tool reads.
    if check {
        let ordered: super::conform::J =
            serde_json::from_slice(&json).map_err(|e| Luks2Error::Json {
                offset: 0,
                message: e.to_string(),
            })?;
        super::conform::check(&ordered, hdr_size - BINARY_SIZE as u64).map_err(|e| {
            Luks2Error::corrupt(
                "header about to be written",
                "(metadata)",
                format!("it would not be valid LUKS2, nothing was written: {e}"),
            )
        })?;
    }
    json.resize(hdr_size as usize - BINARY_SIZE, 0);
    // cryptsetup's exclusive lock, for both copies: no reader (of either tool) sees a copy
    // mid-write, and no cryptsetup command changes the header meanwhile.
    let _lock = dev
        .metadata_lock(true)
        .map_err(|source| Luks2Error::Io { offset: 0, source })?;
    // A barrier: what the new header refers to (a keyslot just written, data a conversion
    // just moved) must be durable before the header says it exists. Without it a power cut
    // could keep the header and lose keyslot sectors: the volume key would be gone.
    dev.sync()
        .map_err(|source| Luks2Error::Io { offset: 0, source })?;
    for secondary in stale_copy_first(dev, hdr_size)? {
        let offset = if secondary { hdr_size } else { 0 };
        let io = |source| Luks2Error::Io { offset, source };
        let mut bin = header.binary.clone();
        bin.secondary = secondary;
        bin.hdr_offset = offset;
        // Each copy has its own salt (it only defeats deduplication).
        crate::random::fill(&mut bin.salt)?;
        dev.write_at(&bin.to_bytes(&[0; 64]), offset).map_err(io)?;
        dev.write_at(&json, offset + BINARY_SIZE as u64)
            .map_err(io)?;
        let csum = bin.checksum(&json);
        dev.write_at(&bin.to_bytes(&csum), offset).map_err(io)?;
        dev.sync().map_err(io)?;
        if !secondary {
            header.binary.salt = bin.salt;
            header.binary.csum = csum;
        }
    }
    Ok(())
}

/// The order in which to write the two copies: `false` is the primary. The copy that holds
/// the newest valid header is written last, so that while the other is being rewritten (and
/// is invalid from its first write on) a reader still finds the newest header, never an
/// older one. In the usual case both copies are equal and cryptsetup's order (primary
/// first) applies. A write that was cut short after a whole primary leaves the secondary a
/// commit behind or damaged; writing the primary first again would expose that secondary
/// and roll the header back two commits, which a conversion cannot survive (found by the
/// SIGKILL harness of `crates/atrest/tests/convert.rs`).
/// A copy that cannot be read is an error (the write would fail too); one that is not a
/// valid header is simply stale.
fn stale_copy_first(dev: &dyn BlockBackend, hdr_size: u64) -> Result<[bool; 2], Luks2Error> {
    let seqid = |offset| match read_copy(dev, offset) {
        Ok((b, _)) => Ok(Some(b.seqid)),
        Err(e @ Luks2Error::Io { .. }) => Err(e),
        Err(_) => Ok(None),
    };
    Ok(match (seqid(0)?, seqid(hdr_size)?) {
        (Some(p), s) if s.is_none_or(|s| s < p) => [true, false],
        _ => [false, true],
    })
}

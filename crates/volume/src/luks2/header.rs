//! Both copies of the header: reading (each copy checked, the valid one with the higher
//! seqid chosen, damage reported) and writing (cryptsetup's order: seqid+1, then primary,
//! then secondary, each as binary header without checksum, JSON area, binary header with
//! checksum, synced before the next copy starts; so one copy is always whole). Everything
//! written before a header write is synced before it starts.

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

fn read_copy(dev: &dyn BlockBackend, offset: u64) -> Result<(BinaryHeader, Metadata), Luks2Error> {
    let io = |source| Luks2Error::Io { offset, source };
    let mut b = [0u8; BINARY_SIZE];
    dev.read_at(&mut b, offset).map_err(io)?;
    let bin = BinaryHeader::parse(&b, offset)?;
    let mut json = vec![0u8; (bin.hdr_size as usize) - BINARY_SIZE];
    dev.read_at(&mut json, offset + BINARY_SIZE as u64)
        .map_err(io)?;
    if bin.checksum(&json) != bin.csum {
        return Err(Luks2Error::Checksum { offset });
    }
    let end = json.iter().position(|&c| c == 0).unwrap_or(json.len());
    if json.first() != Some(&b'{') || json[end..].iter().any(|&c| c != 0) {
        return Err(Luks2Error::corrupt(
            &format!("JSON area (copy at byte {offset})"),
            "(bytes)",
            "not a NUL-terminated JSON object followed by zeros",
        ));
    }
    let metadata: Metadata =
        serde_json::from_slice(&json[..end]).map_err(|e| Luks2Error::Json {
            offset,
            message: e.to_string(),
        })?;
    if metadata.config.json_size != bin.hdr_size - BINARY_SIZE as u64 {
        return Err(Luks2Error::corrupt(
            &format!("config.json_size (copy at byte {offset})"),
            metadata.config.json_size,
            "does not match the binary header's hdr_size",
        ));
    }
    Ok((bin, metadata))
}

/// Reads the header of `dev`.
pub fn read(dev: &dyn BlockBackend) -> Result<Read, Luks2Error> {
    let primary = read_copy(dev, 0);
    // The secondary sits at hdr_size; if the primary cannot say where, try every size.
    let secondary = match &primary {
        Ok((b, _)) => read_copy(dev, b.hdr_size),
        Err(_) => HDR_SIZES
            .iter()
            .map(|&o| read_copy(dev, o))
            .find(|r| {
                !matches!(
                    r,
                    Err(Luks2Error::NotLuks { .. }) | Err(Luks2Error::Io { .. })
                )
            })
            .unwrap_or(Err(Luks2Error::NotLuks { offset: 0x4000 })),
    };
    match (primary, secondary) {
        (Ok(p), Ok(s)) => {
            let (bin, metadata) = if s.0.seqid > p.0.seqid { s } else { p };
            Ok(Read {
                header: Header {
                    binary: bin,
                    metadata,
                },
                damaged: None,
            })
        }
        (Ok((bin, metadata)), Err(e)) => Ok(Read {
            header: Header {
                binary: bin,
                metadata,
            },
            damaged: Some(("secondary", e.to_string())),
        }),
        // Even with no primary magic at all, a valid secondary makes a damaged LUKS2 volume.
        (Err(e), Ok((bin, metadata))) => Ok(Read {
            header: Header {
                binary: bin,
                metadata,
            },
            damaged: Some(("primary", e.to_string())),
        }),
        (Err(Luks2Error::NotLuks { .. }), Err(Luks2Error::NotLuks { .. })) => {
            Err(Luks2Error::NotLuks { offset: 0 })
        }
        (Err(p), Err(s)) => Err(Luks2Error::BothCopiesDamaged {
            primary: p.to_string(),
            secondary: s.to_string(),
        }),
    }
}

/// Writes both copies of `header` with seqid increased by one (which it updates).
pub fn write(dev: &dyn BlockBackend, header: &mut Header) -> Result<(), Luks2Error> {
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
    json.resize(hdr_size as usize - BINARY_SIZE, 0);
    // A barrier: what the new header refers to (a keyslot just written, data a conversion
    // just moved) must be durable before the header says it exists. Without it a power cut
    // could keep the header and lose keyslot sectors: the volume key would be gone.
    dev.sync()
        .map_err(|source| Luks2Error::Io { offset: 0, source })?;
    for (secondary, offset) in [(false, 0), (true, hdr_size)] {
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

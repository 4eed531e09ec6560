//! The header survives damage to one copy, says which, and refuses cleanly (never panics)
//! when both are gone or the geometry is hostile.

use std::sync::Arc;

use volume::backend::{BlockBackend, MemBackend};
use volume::luks2::header;
use volume::luks2::Luks2Error;
use volume::volume::{format, status, unlock, FormatOptions, KeyMode, VolumeError};

const SIZE: usize = 17 << 20;

fn formatted(secret: &[u8]) -> Arc<MemBackend> {
    let dev = Arc::new(MemBackend::new(SIZE));
    let opts = FormatOptions {
        mode: KeyMode::Wrapped,
        volume_key_len: 32,
        sector_size: 512,
        key_uid: "uid-7".into(),
        server_hint: None,
        data_size: None,
        detached: false,
    };
    format(dev.as_ref(), secret, &opts).unwrap();
    dev
}

fn flip(dev: &MemBackend, at: u64) {
    let mut b = [0u8; 1];
    dev.read_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    dev.write_at(&b, at).unwrap();
}

#[test]
fn recovers_from_a_damaged_primary_or_secondary_and_says_which() {
    let secret = [9u8; 32];
    for (at, which) in [
        (200u64, "primary"),
        (4096 + 10, "primary"),
        (0x4000 + 200, "secondary"),
        (0x4000 + 5000, "secondary"),
    ] {
        let dev = formatted(&secret);
        flip(&dev, at);
        let r = header::read(dev.as_ref()).unwrap();
        assert_eq!(r.damaged.as_ref().map(|d| d.0), Some(which), "byte {at}");
        let s = status(dev.as_ref()).unwrap();
        assert!(s.damaged_copy.unwrap().starts_with(which));
        assert_eq!(s.key_uid, "uid-7");
        let dyn_dev: Arc<dyn BlockBackend> = dev.clone();
        let vol = unlock(dyn_dev, &secret).unwrap();
        // Unlocking, with the key proven, rewrote the damaged copy.
        assert!(
            vol.repaired().unwrap().contains(which),
            "{:?}",
            vol.repaired()
        );
        let again = header::read(dev.as_ref()).unwrap();
        assert!(again.damaged.is_none(), "byte {at}: {:?}", again.damaged);
        assert_eq!(again.header.binary.seqid, r.header.binary.seqid + 1);
    }
}

#[test]
fn a_wrong_key_does_not_repair_a_damaged_copy() {
    let dev = formatted(&[9u8; 32]);
    flip(&dev, 200);
    let before = dev.contents();
    let dyn_dev: Arc<dyn BlockBackend> = dev.clone();
    assert!(matches!(
        unlock(dyn_dev, &[8u8; 32]),
        Err(VolumeError::WrongKey)
    ));
    assert!(dev.contents() == before, "a wrong key changed the device");
}

#[test]
fn both_copies_damaged_is_an_error_naming_both() {
    let dev = formatted(&[9u8; 32]);
    flip(&dev, 5000);
    flip(&dev, 0x4000 + 5000);
    let e = header::read(dev.as_ref()).unwrap_err();
    assert!(matches!(e, Luks2Error::BothCopiesDamaged { .. }), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn a_blank_device_is_not_luks_and_hostile_geometry_is_refused() {
    let dev = MemBackend::new(1 << 20);
    assert!(matches!(
        header::read(&dev),
        Err(Luks2Error::NotLuks { .. })
    ));
    // A primary header claiming an hdr_size outside the allowed set.
    let good = formatted(&[9u8; 32]);
    let mut b = vec![0u8; 4096];
    good.read_at(&mut b, 0).unwrap();
    b[8..16].copy_from_slice(&12345u64.to_be_bytes());
    let dev = MemBackend::new(1 << 20);
    dev.write_at(&b, 0).unwrap();
    let e = header::read(&dev).unwrap_err().to_string();
    assert!(
        e.contains("hdr_size") || e.contains("no LUKS2 header"),
        "{e}"
    );
    // Truncated device: the header is there but the JSON area is cut short.
    let cut = MemBackend::new(6000);
    let mut head = vec![0u8; 6000];
    good.read_at(&mut head, 0).unwrap();
    cut.write_at(&head, 0).unwrap();
    assert!(header::read(&cut).is_err());
}

#[test]
fn plaintext_round_trips_at_odd_offsets_and_lengths_and_out_of_range_is_an_error() {
    let secret = [3u8; 32];
    let dev: Arc<dyn BlockBackend> = formatted(&secret);
    let vol = unlock(dev.clone(), &secret).unwrap();
    assert_eq!(vol.size(), (SIZE as u64) - (16 << 20));
    let mut reference = vec![0u8; vol.size() as usize];
    vol.read_at(&mut reference, 0).unwrap();
    let mut seed = 1u64;
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (seed >> 20) % (vol.size() - 5000);
        let len = ((seed >> 8) % 4999 + 1) as usize;
        let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ seed) as u8).collect();
        vol.write_at(&data, off).unwrap();
        reference[off as usize..off as usize + len].copy_from_slice(&data);
    }
    let mut all = vec![0u8; vol.size() as usize];
    vol.read_at(&mut all, 0).unwrap();
    assert!(all == reference);
    // Reopened from disk, the same.
    let again = unlock(dev, &secret).unwrap();
    again.read_at(&mut all, 0).unwrap();
    assert!(all == reference);
    assert!(matches!(
        again.write_at(&[0; 2], again.size() - 1),
        Err(VolumeError::OutOfRange { .. })
    ));
}

#[test]
fn hostile_headers_never_panic() {
    // A real header, then random bit flips, truncations and JSON replacements.
    let dev = formatted(&[5u8; 32]);
    let image = dev.contents()[..0x10000].to_vec();
    let mut seed = 7u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 16
    };
    for _ in 0..400 {
        let mut m = image.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % 0x8000;
            m[at] ^= 1 << (next() % 8);
        }
        volume::fuzzing::luks2_header(&m);
        let cut = (next() as usize) % m.len();
        volume::fuzzing::luks2_header(&m[..cut]);
    }
    // Valid checksums around hostile JSON: re-sign a header whose JSON lies about geometry.
    for json in [
        r#"{"keyslots":{},"tokens":{},"segments":{"0":{"type":"crypt","offset":"18446744073709551615","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":0}},"digests":{},"config":{"json_size":"12288","keyslots_size":"0"}}"#,
        r#"{"keyslots":{"0":{"type":"luks2","key_size":4294967295,"af":{"type":"luks1","stripes":4294967295,"hash":"sha256"},"area":{"type":"raw","offset":"0","size":"1","encryption":"aes-xts-plain64","key_size":32},"kdf":{"type":"pbkdf2","salt":"AA=="}}},"tokens":{},"segments":{},"digests":{},"config":{"json_size":"12288","keyslots_size":"0"}}"#,
        r#"{"keyslots":[],"tokens":1}"#,
        "{",
    ] {
        let mut m = image.clone();
        let area = &mut m[4096..0x4000];
        area.fill(0);
        area[..json.len()].copy_from_slice(json.as_bytes());
        let bin =
            volume::luks2::binary::BinaryHeader::parse(&m[..4096].try_into().unwrap(), 0).unwrap();
        let csum = bin.checksum(&m[4096..0x4000]);
        m[..4096].copy_from_slice(&bin.to_bytes(&csum));
        // Remove the secondary so the hostile primary is the one parsed.
        m[0x4000..0x4006].fill(0);
        volume::fuzzing::luks2_header(&m);
        let dev: Arc<dyn BlockBackend> =
            Arc::new(MemBackend::from_bytes([m, vec![0; 1 << 20]].concat()));
        assert!(unlock(dev, &[5u8; 32]).is_err());
    }
}

#[test]
fn hostile_json_behind_a_valid_checksum_never_panics() {
    // Our own header's JSON, then truncations and byte edits of it, each re-signed.
    let dev = formatted(&[5u8; 32]);
    let json = dev.contents()[4096..0x4000].to_vec();
    let end = json.iter().position(|&b| b == 0).unwrap();
    volume::fuzzing::luks2_json(&json[..end]);
    let mut seed = 11u64;
    for _ in 0..100 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut m = json[..end].to_vec();
        let at = (seed >> 20) as usize % m.len();
        m[at] = b"0123456789\"{}[],:-ae "[(seed >> 8) as usize % 21];
        volume::fuzzing::luks2_json(&m);
        volume::fuzzing::luks2_json(&m[..at]);
    }
}

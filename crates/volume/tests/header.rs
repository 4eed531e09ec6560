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
        unlock(dyn_dev, &secret).unwrap();
    }
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

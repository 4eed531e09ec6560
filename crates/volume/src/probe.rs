//! What a device already holds, so `format` can refuse to destroy data by mistake.

use crate::backend::BlockBackend;

/// Known signatures: (offset, bytes, what).
const SIGNATURES: &[(u64, &[u8], &str)] = &[
    (0, b"LUKS\xba\xbe", "a LUKS header"),
    (0x4000, b"SKUL\xba\xbe", "a LUKS2 secondary header"),
    (1080, &[0x53, 0xEF], "an ext2/3/4 filesystem"),
    (0, b"XFSB", "an XFS filesystem"),
    (65600, b"_BHRfS_M", "a btrfs filesystem"),
    (3, b"NTFS    ", "an NTFS filesystem"),
    (82, b"FAT32   ", "a FAT32 filesystem"),
    (54, b"FAT1", "a FAT filesystem"),
    (4086, b"SWAPSPACE2", "a swap area"),
    (512, b"LABELONE", "an LVM physical volume"),
    (512, b"EFI PART", "a GPT partition table"),
    (32769, b"CD001", "an ISO 9660 filesystem"),
    (0x438, &[0x53, 0xEF], "an ext filesystem"),
];

/// Describes what `dev` holds: a known signature, or "data" when its first MiB is not all
/// zero, or `None` for a blank device.
pub fn existing_content(dev: &dyn BlockBackend) -> std::io::Result<Option<String>> {
    let len = dev.len()?;
    let n = len.min(1 << 20) as usize;
    let mut head = vec![0u8; n];
    dev.read_at(&mut head, 0)?;
    for &(at, magic, what) in SIGNATURES {
        let at = at as usize;
        if head.get(at..at + magic.len()) == Some(magic) {
            return Ok(Some(what.to_owned()));
        }
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
        return Ok(Some("a partition table or boot sector".into()));
    }
    Ok(head
        .iter()
        .any(|&b| b != 0)
        .then(|| "data (its first MiB is not blank)".into()))
}

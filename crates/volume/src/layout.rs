//! Where things sit on an atrest device: the constants of the format that every layer
//! (the header, its validation, the conversions) must agree on. They live here, below
//! all of those, so that none of them has to reach into another for a number.
//!
//! ```text
//! attached:  | hdr #1 | hdr #2 | keyslot areas ... | journal (1 MiB ..) | record | data ... | park | park record |
//!            0        16 KiB   32 KiB              1 MiB         9 MiB          16 MiB
//! ```
//! The park and its record exist only while `encrypt` or `decrypt` runs; the journal only
//! while a conversion works in place (`rekey --deep`, `--header` conversions).

/// Header size atrest writes (cryptsetup's default: 16 KiB, two copies).
pub const HDR_SIZE: u64 = 0x4000;
/// Data offset atrest writes (cryptsetup's default, leaving room for keyslots).
pub const DATA_OFFSET: u64 = 16 * 1024 * 1024;
/// Where keyslot areas go: the first after the two header copies, the second far enough on
/// for a 512-bit key's area (252 KiB); a rewrap alternates between them.
pub const SLOT_AREAS: [u64; 2] = [2 * HDR_SIZE, 2 * HDR_SIZE + (256 << 10)];
/// The size atrest gives each keyslot area.
pub const SLOT_AREA_LEN: u64 = 256 << 10;

/// A self-checking record block (park record, journal record).
pub const RECORD_LEN: u64 = 4096;
/// How many plaintext bytes are parked at most (1 MiB, more than the header and two
/// keyslots occupy, so nothing but the final step ever writes over parked-from bytes).
pub const PARK_LEN: u64 = 1 << 20;

/// Start of the hot-zone journal: past the header copies and both keyslot areas.
pub const JOURNAL_OFFSET: u64 = 1 << 20;
/// Largest hot zone.
pub const MAX_HOTZONE: u64 = 8 << 20;
/// The journal record's place, right after the largest hot zone.
pub const JOURNAL_RECORD_OFFSET: u64 = JOURNAL_OFFSET + MAX_HOTZONE;
/// End of everything the journal may use.
pub const JOURNAL_END: u64 = JOURNAL_RECORD_OFFSET + RECORD_LEN;

/// Where the park starts on a device of `dev_len` bytes (`None` if it cannot fit).
pub fn park_offset(dev_len: u64, park_len: u64) -> Option<u64> {
    dev_len.checked_sub(RECORD_LEN)?.checked_sub(park_len)
}

/// The parked length for a volume of `size` bytes.
pub fn park_len(size: u64) -> u64 {
    size.min(PARK_LEN)
}

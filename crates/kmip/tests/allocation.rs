//! The codec's "without allocating" claims, measured: a TTLV length field of 4 GiB, or a
//! structure whose children claim more than their parent holds, is refused before
//! anything the length sizes is allocated. The counting allocator (`testkit::alloc`)
//! watches the largest single allocation while the hostile bytes are decoded.

use kmip::ttlv::decode;
use kmip::DecodeError;
use testkit::alloc::{largest, Watching};

#[global_allocator]
static ALLOC: Watching = Watching;

/// The watcher counts every thread's allocations, so the tests of this binary run one at a
/// time, setup included: another test building its input must not be counted in this one.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

#[test]
fn a_four_gigabyte_length_is_refused_without_allocating_it() {
    let _serial = serial();
    let b = unhex("420020 08 FFFFFFF0 00");
    let big = largest(|| {
        assert!(matches!(decode(&b), Err(DecodeError::Truncated { .. })));
    });
    assert!(
        big < 4096,
        "decoding a hostile length allocated {big} bytes at once"
    );
}

#[test]
fn nested_structures_claiming_more_than_they_hold_allocate_little() {
    let _serial = serial();
    // 64 nested Structures, each claiming 2 GiB.
    let mut b = Vec::new();
    for _ in 0..64 {
        b.extend_from_slice(&unhex("420020 01 7FFFFFF0"));
    }
    let big = largest(|| {
        assert!(decode(&b).is_err());
    });
    assert!(big < 64 << 10, "{big} bytes at once");
}

#[test]
fn the_watcher_sees_an_allocation() {
    let _serial = serial();
    // The control: a decode that must allocate its 512 KiB byte string is seen as such.
    let mut b = unhex("420020 08 00080000");
    b.resize(8 + (512 << 10), 0xab);
    let big = largest(|| {
        let item = decode(&b).unwrap();
        std::hint::black_box(item);
    });
    assert!(
        big >= 512 << 10,
        "the watcher missed a 512 KiB allocation: {big}"
    );
}

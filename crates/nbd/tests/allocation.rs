//! The wire decoders' "a hostile length allocates nothing" claims, measured with the
//! counting allocator (`testkit::alloc`): an `NBD_OPT_INFO` whose name claims 4 GiB, or
//! whose count of information requests does not match its bytes, is refused without
//! allocating what it claims.

use nbd::wire::InfoRequest;
use nbd::WireError;
use testkit::alloc::{largest, Watching};

#[global_allocator]
static ALLOC: Watching = Watching;

/// The watcher counts every thread's allocations, so the tests of this binary run one at a
/// time, setup included: another test building its input must not be counted in this one.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The watcher counts every thread's allocations, and the test harness's own threads make
/// small ones (8, 64 bytes seen) while a section is watched: a claim of "nothing" is held
/// to "nothing near what the input claims", well under the control's 8 000 bytes.
const NOISE: usize = 1024;

#[test]
fn a_name_claiming_four_gigabytes_allocates_nothing() {
    let _serial = serial();
    let mut b = vec![0xff, 0xff, 0xff, 0xff];
    b.extend_from_slice(b"abc");
    let big = largest(|| {
        assert_eq!(InfoRequest::decode(&b), Err(WireError::Truncated));
    });
    assert!(
        big < NOISE,
        "decoding a hostile name length allocated {big} bytes"
    );
}

#[test]
fn a_count_past_the_data_allocates_nothing() {
    let _serial = serial();
    let b = [0, 0, 0, 0, 0xff, 0xff, 0, 3];
    let big = largest(|| {
        assert!(InfoRequest::decode(&b).is_err());
    });
    assert!(big < NOISE, "{big} bytes");
}

#[test]
fn the_watcher_sees_the_requests_a_valid_option_holds() {
    let _serial = serial();
    // The control: a valid option with 4 000 information requests is collected into a Vec
    // of 8 000 bytes, which the watcher sees above the noise bound.
    let n: u16 = 4000;
    let mut b = vec![0, 0, 0, 1, b'x'];
    b.extend_from_slice(&n.to_be_bytes());
    for _ in 0..n {
        b.extend_from_slice(&3u16.to_be_bytes());
    }
    let big = largest(|| {
        let r = InfoRequest::decode(&b).unwrap();
        assert_eq!(r.name, "x");
        assert_eq!(r.requests.len(), usize::from(n));
        std::hint::black_box(r);
    });
    assert!(big >= NOISE, "the watcher missed the request list: {big}");
}

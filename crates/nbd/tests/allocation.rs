//! The wire decoders' "a hostile length allocates nothing" claims, measured with the
//! counting allocator (`testkit::alloc`): an `NBD_OPT_INFO` whose name claims 4 GiB, or
//! whose count of information requests does not match its bytes, is refused without
//! allocating what it claims.

use nbd::wire::InfoRequest;
use nbd::WireError;
use testkit::alloc::{largest, Watching};

#[global_allocator]
static ALLOC: Watching = Watching;

#[test]
fn a_name_claiming_four_gigabytes_allocates_nothing() {
    let mut b = vec![0xff, 0xff, 0xff, 0xff];
    b.extend_from_slice(b"abc");
    let big = largest(|| {
        assert_eq!(InfoRequest::decode(&b), Err(WireError::Truncated));
    });
    assert_eq!(
        big, 0,
        "decoding a hostile name length allocated {big} bytes"
    );
}

#[test]
fn a_count_past_the_data_allocates_nothing() {
    let b = [0, 0, 0, 0, 0xff, 0xff, 0, 3];
    let big = largest(|| {
        assert!(InfoRequest::decode(&b).is_err());
    });
    assert_eq!(big, 0, "{big} bytes");
}

#[test]
fn the_watcher_sees_the_requests_a_valid_option_holds() {
    // The control: a valid request list is collected into a Vec, which the watcher sees.
    let b = [0, 0, 0, 1, b'x', 0, 2, 0, 0, 0, 3];
    let big = largest(|| {
        let r = InfoRequest::decode(&b).unwrap();
        assert_eq!(r.name, "x");
        std::hint::black_box(r);
    });
    assert!(big > 0, "the watcher missed the request list");
}

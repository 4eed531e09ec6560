#![allow(unsafe_code)] // The allocation watcher below is a GlobalAlloc, which is unsafe to implement.
//! The wire decoders' "a hostile length allocates nothing" claims, measured with a counting
//! allocator: an `NBD_OPT_INFO` whose name claims 4 GiB, or whose count of information
//! requests does not match its bytes, is refused without allocating what it claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use nbd::wire::InfoRequest;
use nbd::WireError;

struct Watching;
static WATCH: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCH.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Watching = Watching;

fn largest(f: impl FnOnce()) -> usize {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    LARGEST.store(0, Ordering::SeqCst);
    WATCH.store(true, Ordering::SeqCst);
    f();
    WATCH.store(false, Ordering::SeqCst);
    LARGEST.swap(0, Ordering::SeqCst)
}

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

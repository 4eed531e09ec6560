//! The allocation watcher: a global allocator that forwards to the system allocator and,
//! while a section is watched, records the largest single allocation (process-wide: an
//! allocation on any thread counts).
//!
//! ```
//! #[global_allocator]
//! static ALLOC: testkit::alloc::Watching = testkit::alloc::Watching;
//!
//! fn main() {
//!     let big = testkit::alloc::largest(|| {
//!         std::hint::black_box(vec![0u8; 1 << 20]);
//!     });
//!     assert!(big >= 1 << 20, "the watcher missed a 1 MiB allocation: {big}");
//! }
//! ```
//!
//! The only `unsafe` of this crate is here: a `GlobalAlloc` is unsafe to implement.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The counting allocator. It measures only in a test binary that installs it as its
/// `#[global_allocator]`; elsewhere [`largest`] and [`watch`] report 0.
pub struct Watching;

static WATCH: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// One watched section at a time (the test harness runs tests on several threads).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// SAFETY: every allocation and deallocation is forwarded unchanged to the system
// allocator, which upholds `GlobalAlloc`'s contract; the only addition is two relaxed
// atomic operations, which neither allocate nor unwind.
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

/// Runs `f` watched: its result, and the largest single allocation made meanwhile.
pub fn watch<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    LARGEST.store(0, Ordering::SeqCst);
    WATCH.store(true, Ordering::SeqCst);
    let out = f();
    WATCH.store(false, Ordering::SeqCst);
    (out, LARGEST.swap(0, Ordering::SeqCst))
}

/// The largest single allocation `f` makes.
pub fn largest(f: impl FnOnce()) -> usize {
    watch(f).1
}

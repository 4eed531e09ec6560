//! The system calls behind [`crate::Locked`] and [`crate::harden_process`]: the one module
//! of the crate allowed `unsafe`, each block with the reason it is sound.

#![allow(unsafe_code)]

use std::ptr::NonNull;

use rustix::mm::{self, Advice, MapFlags, ProtFlags};

use crate::{LockError, Locked};

// SAFETY: `Locked<T>` uniquely owns the `T` behind its pointer, as a `Box<T>` does, so
// moving it to another thread is sound exactly when `T: Send` (the raw pointer only
// keeps the compiler from deriving this).
unsafe impl<T: Send> Send for Locked<T> {}
// SAFETY: `&Locked<T>` gives out nothing but `&T`, so sharing it is sound when `T: Sync`.
unsafe impl<T: Sync> Sync for Locked<T> {}

fn page_size() -> usize {
    rustix::param::page_size()
}

/// Maps zeroed, private, page-aligned memory for one `T`, locked and marked don't-dump.
pub(crate) fn map_locked<T>() -> Result<(NonNull<T>, usize), LockError> {
    let page = page_size();
    let len = std::mem::size_of::<T>().max(1).div_ceil(page) * page;
    assert!(
        std::mem::align_of::<T>() <= page,
        "a type aligned beyond a page"
    );
    // SAFETY: an anonymous private mapping of `len` bytes at an address the kernel picks;
    // it aliases nothing, and we own it until `unmap`.
    let raw = unsafe {
        mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .map_err(|e| LockError::Map(e.into()))?;
    let undo = |e| {
        // SAFETY: `raw`/`len` is the mapping made above, not yet handed out.
        let _ = unsafe { mm::munmap(raw, len) };
        e
    };
    // SAFETY: `raw`/`len` is our own mapping; mlock and madvise only change how the
    // kernel pages it, not its contents or validity.
    unsafe { mm::mlock(raw, len) }.map_err(|e| undo(LockError::Lock(e.into())))?;
    // SAFETY: as above; DONTDUMP changes only what a core dump contains.
    unsafe { mm::madvise(raw, len, Advice::LinuxDontDump) }
        .map_err(|e| undo(LockError::DontDump(e.into())))?;
    let ptr = NonNull::new(raw.cast::<T>())
        .ok_or_else(|| undo(LockError::Map(std::io::Error::other("mmap returned null"))))?;
    Ok((ptr, len))
}

/// Writes `value` into the fresh mapping at `ptr`.
pub(crate) fn put<T>(ptr: NonNull<T>, value: T) {
    // SAFETY: `ptr` is a fresh mapping of at least `size_of::<T>()` bytes, page aligned
    // (so aligned for `T`), holding no value yet.
    unsafe { ptr.as_ptr().write(value) }
}

/// The value at `ptr`, for as long as the caller (the owning `Locked`) lets it be borrowed.
pub(crate) fn get<'a, T>(ptr: NonNull<T>) -> &'a T {
    // SAFETY: `ptr` holds an initialised `T` (written by `put`) that lives until `unmap`;
    // the `Locked` that owns it ties the returned borrow to its own lifetime.
    unsafe { &*ptr.as_ptr() }
}

/// The value at `ptr`, mutably.
pub(crate) fn get_mut<T>(ptr: &mut NonNull<T>) -> &mut T {
    // SAFETY: as `get`; the `&mut` to the owning `Locked` makes this borrow unique.
    unsafe { &mut *ptr.as_ptr() }
}

/// Drops the value at `ptr`, zeroes the mapping and unmaps it.
pub(crate) fn unmap<T>(ptr: NonNull<T>, len: usize) {
    // SAFETY: `ptr` holds the initialised `T` that `put` wrote, dropped exactly once here
    // (this runs from `Locked::drop`); afterwards the bytes are plain memory we own.
    unsafe { std::ptr::drop_in_place(ptr.as_ptr()) };
    // SAFETY: the mapping is `len` writable bytes that nothing else refers to any more.
    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr().cast::<u8>(), len) };
    zero(bytes);
    // SAFETY: our own mapping, no longer referenced.
    let _ = unsafe { mm::munmap(ptr.as_ptr().cast(), len) };
}

/// Zeroes `b` in a way the compiler may not remove (the memory is about to be freed or
/// abandoned, which is exactly when a plain write would be optimised away).
pub(crate) fn zero(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: `x` is a valid, aligned `&mut u8`.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Has glibc's allocator overwrite every block it frees (`M_PERTURB`).
pub(crate) fn wipe_freed_blocks() -> bool {
    // SAFETY: mallopt only changes the allocator's settings; M_PERTURB with a byte value
    // is documented for any time in the process's life. Returns 1 on success.
    unsafe { libc::mallopt(libc::M_PERTURB, 0xa5) == 1 }
}

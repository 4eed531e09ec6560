//! Key memory hygiene for every atrest process that holds a key.
//!
//! A key fetched from the key manager must live in memory only, and only there: not in
//! swap, not in a core dump, not readable through `/proc/PID/mem` by the same user, not
//! left behind in freed memory. This crate gives the two tools for that:
//!
//! - [`harden_process`], called first thing by every process that fetches a key: the
//!   process is made non-dumpable (`PR_SET_DUMPABLE 0`: no core dump, no ptrace or
//!   `/proc/PID/mem` by its user), its core size limit is 0, and the C allocator wipes
//!   every block it frees (glibc's `M_PERTURB`), so the transient copies other libraries
//!   make (OpenSSL's TLS record buffers hold a fetched key in the clear) do not outlive
//!   their use.
//! - [`Locked`], a box for long-lived key material (the XTS key schedules of an unlocked
//!   volume): its pages are locked in RAM (`mlock`), excluded from core dumps
//!   (`MADV_DONTDUMP`), zeroed and unmapped on drop.
//!
//! No crate offers both with a safe API (`memsec` and `region` expose raw pointers;
//! `secrecy` and `zeroize` only clear on drop), so the few system calls are made here, in
//! `sys.rs`, the one module allowed `unsafe`, each with its SAFETY note.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod sys;

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// What [`harden_process`] achieved (each step is attempted; none is fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// `PR_SET_DUMPABLE` is 0.
    pub not_dumpable: bool,
    /// `RLIMIT_CORE` is 0.
    pub no_core: bool,
    /// The C allocator wipes freed blocks.
    pub free_wipes: bool,
}

/// Hardens the calling process (see the crate's documentation). Call it before the first
/// key is fetched; it applies to every thread.
pub fn harden_process() -> Hardening {
    let not_dumpable =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .is_ok();
    let no_core = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .is_ok();
    Hardening {
        not_dumpable,
        no_core,
        free_wipes: sys::wipe_freed_blocks(),
    }
}

/// True when the process is not dumpable (for status reports and tests).
pub fn is_dumpable() -> bool {
    rustix::process::dumpable_behavior()
        .is_ok_and(|b| b != rustix::process::DumpableBehavior::NotDumpable)
}

/// Why a [`Locked`] box could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// No memory could be mapped.
    #[error("mapping memory for a key: {0}")]
    Map(std::io::Error),
    /// The pages could not be locked (`RLIMIT_MEMLOCK` too small for a non-root user).
    #[error("locking key memory in RAM: {0} (raise the memlock limit, or run as root)")]
    Lock(std::io::Error),
    /// The pages could not be excluded from core dumps.
    #[error("excluding key memory from core dumps: {0}")]
    DontDump(std::io::Error),
}

/// A value in pages of its own that are locked in RAM and left out of core dumps; the
/// pages are zeroed after the value is dropped, then unmapped. For key material without
/// heap indirection (the key schedules themselves must be inside the value).
pub struct Locked<T> {
    pub(crate) ptr: NonNull<T>,
    pub(crate) len: usize,
}

impl<T> Locked<T> {
    /// Moves `value` into locked, never-dumped pages.
    pub fn new(value: T) -> Result<Self, LockError> {
        let (ptr, len) = sys::map_locked::<T>()?;
        sys::put(ptr, value);
        Ok(Self { ptr, len })
    }
}

impl<T> Deref for Locked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        sys::get(self.ptr)
    }
}

impl<T> DerefMut for Locked<T> {
    fn deref_mut(&mut self) -> &mut T {
        sys::get_mut(&mut self.ptr)
    }
}

impl<T> Drop for Locked<T> {
    fn drop(&mut self) {
        sys::unmap(self.ptr, self.len);
    }
}

impl<T> std::fmt::Debug for Locked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Locked({} bytes, redacted)", self.len)
    }
}

/// Overwrites 64 KiB of the stack below the caller's frame. Key setup leaves copies in
/// the stack frames of the functions it called (a key schedule built on the stack and
/// then moved into [`Locked`]); calling this right after, from the same depth, writes
/// over them.
pub fn wipe_stack() {
    wipe_stack_bytes::<{ 64 * 1024 }>();
}

/// Overwrites `N` bytes of the stack below the caller's frame: for code that keeps round
/// keys in vector registers, which the compiler may spill to its frame (found by scanning
/// a memory image of a serving process: the data key sat in a stale worker stack).
#[inline(never)]
pub fn wipe_stack_bytes<const N: usize>() {
    let mut area = [0u8; N];
    wipe(&mut area);
}

/// Overwrites `bytes` with zeros in a way the compiler does not remove even when they are
/// never read again, at `memset` speed: per-byte volatile stores (what `zeroize` does)
/// cost about a cycle a byte, which on the data path was several times the cipher.
pub fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    // The optimiser must assume `black_box` reads the memory behind the pointer, so the
    // stores above are not dead; the fence keeps them before whatever follows.
    std::hint::black_box(bytes.as_mut_ptr());
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests read the process-wide VmLck: one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn locked_pages_are_locked_and_hold_the_value() {
        let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let before = vmlck_kb();
        let mut k = Locked::new([7u8; 64]).unwrap();
        assert_eq!(k[..], [7u8; 64]);
        k[0] = 9;
        assert_eq!(k[0], 9);
        assert!(vmlck_kb() >= before + 4, "VmLck did not grow");
        let p = &k[0] as *const u8 as usize;
        assert_eq!(p % 4096, 0, "not page aligned");
        assert!(
            smaps_flags(p).contains("dd"),
            "the page is not marked don't-dump"
        );
        drop(k);
        assert!(vmlck_kb() <= before, "VmLck did not shrink back");
    }

    #[test]
    fn a_value_with_drop_is_dropped_once() {
        let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct D;
        impl Drop for D {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        drop(Locked::new(D).unwrap());
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn hardening_makes_the_process_undumpable() {
        // In a child, so the test binary itself stays dumpable for debugging.
        if std::env::var_os("SECMEM_CHILD").is_some() {
            let h = harden_process();
            assert!(h.not_dumpable && h.no_core && h.free_wipes, "{h:?}");
            assert!(!is_dumpable());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::hardening_makes_the_process_undumpable",
                "--nocapture",
            ])
            .env("SECMEM_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(is_dumpable(), "the parent was hardened too");
    }

    fn vmlck_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn smaps_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = a <= addr && addr < b;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(f) = line.strip_prefix("VmFlags:") {
                    return f.to_owned();
                }
            }
        }
        String::new()
    }
}

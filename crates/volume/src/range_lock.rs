//! Exclusive locks on byte ranges, for the writes of an unlocked volume. A write that does
//! not cover whole sectors reads, merges and rewrites them; two such writes to different
//! bytes of one sector, or one of them and a whole-sector write, must not interleave or
//! one undoes the other. Writes whose sector ranges overlap therefore run one after the
//! other; all others (the common case: an NBD client's aligned requests) run in parallel.
//! Reads take no lock: a read racing a write may see either, as on any disk.

use std::sync::{Condvar, Mutex, MutexGuard};

/// The ranges being written now, and how many writers wait for one of them (a `Condvar`
/// notification is a system call even with nobody waiting: only made for a waiter).
#[derive(Default)]
pub struct RangeLock {
    held: Mutex<Ranges>,
    freed: Condvar,
}

#[derive(Default)]
struct Ranges {
    /// The ranges held.
    held: Vec<(u64, u64)>,
    /// Writers waiting for a range (also what a test waits on to know that a writer is
    /// waiting, instead of sleeping and hoping).
    waiters: usize,
}

/// A held range; released on drop.
pub struct Held<'a> {
    lock: &'a RangeLock,
    range: (u64, u64),
}

impl RangeLock {
    fn ranges(&self) -> MutexGuard<'_, Ranges> {
        // A panic while holding the list leaves it consistent (push and remove are
        // single steps), so a poisoned lock is still usable.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no held range overlaps `[start, end)`, then holds it.
    pub fn lock(&self, start: u64, end: u64) -> Held<'_> {
        let mut r = self.ranges();
        while r.held.iter().any(|&(s, e)| s < end && start < e) {
            r.waiters += 1;
            r = self.freed.wait(r).unwrap_or_else(|p| p.into_inner());
            r.waiters -= 1;
        }
        r.held.push((start, end));
        Held {
            lock: self,
            range: (start, end),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut r = self.lock.ranges();
        if let Some(i) = r.held.iter().position(|&h| h == self.range) {
            r.held.swap_remove(i);
        }
        let wake = r.waiters > 0;
        drop(r);
        if wake {
            self.lock.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn overlapping_ranges_wait_and_disjoint_ones_do_not() {
        let lock = Arc::new(RangeLock::default());
        let inside = Arc::new(AtomicU32::new(0));
        let a = lock.lock(0, 512);
        let _b = lock.lock(512, 1024); // disjoint: does not wait
        let t = {
            let (lock, inside) = (lock.clone(), inside.clone());
            std::thread::spawn(move || {
                let _c = lock.lock(100, 200);
                inside.store(1, Ordering::SeqCst);
            })
        };
        // The overlapping writer is blocked inside `lock` (counted while it waits on the
        // condition variable, under the list's mutex), not merely not scheduled yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock.ranges().waiters == 0 {
            assert!(
                inside.load(Ordering::SeqCst) == 0,
                "an overlapping range did not wait"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited"
            );
            std::thread::yield_now();
        }
        assert_eq!(
            inside.load(Ordering::SeqCst),
            0,
            "an overlapping range did not wait"
        );
        drop(a);
        t.join().unwrap();
        assert_eq!(inside.load(Ordering::SeqCst), 1);
    }
}

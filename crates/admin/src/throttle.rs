//! Failed logins, counted per source address: a few are free, then each address waits,
//! twice as long after every further failure (up to a cap), whatever it types: a correct
//! password during the wait is refused too, or the wait would be no limit at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in [`WINDOW`] before waits begin.
pub const FREE_FAILURES: u32 = 5;
/// How long failures are remembered.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first wait.
pub const FIRST_WAIT: Duration = Duration::from_secs(30);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most (the oldest forgotten first): a flood of addresses costs
/// memory up to here, no further.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    until: Option<Instant>,
}

/// The per-address failure counts.
#[derive(Debug, Default)]
pub struct Throttle {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

impl Throttle {
    /// `Err(wait)` while `addr` must wait before trying again.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&addr).and_then(|f| f.until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `addr`; the wait it now has, if any.
    pub fn failed(&self, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, f| now.duration_since(f.first) < WINDOW);
            if map.len() >= MAX_ADDRESSES {
                if let Some(oldest) = map.iter().min_by_key(|(_, f)| f.first).map(|(a, _)| *a) {
                    map.remove(&oldest);
                }
            }
        }
        let f = map.entry(addr).or_insert(Failures {
            count: 0,
            first: now,
            until: None,
        });
        if now.duration_since(f.first) >= WINDOW && f.until.is_none_or(|u| u <= now) {
            *f = Failures {
                count: 0,
                first: now,
                until: None,
            };
        }
        f.count += 1;
        if f.count < FREE_FAILURES {
            return None;
        }
        let doublings = (f.count - FREE_FAILURES).min(16);
        let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
        f.until = Some(now + wait);
        Some(wait)
    }

    /// A successful login forgets the address's failures.
    pub fn succeeded(&self, addr: IpAddr) {
        self.by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_begin_after_the_free_failures_and_double() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 1..FREE_FAILURES {
            assert_eq!(t.failed(a), None);
            assert!(t.check(a).is_ok());
        }
        assert_eq!(t.failed(a), Some(FIRST_WAIT));
        let left = t.check(a).unwrap_err();
        assert!(left <= FIRST_WAIT && left > FIRST_WAIT - Duration::from_secs(5));
        assert_eq!(t.failed(a), Some(FIRST_WAIT * 2));
        // Another address is not affected; a success clears only its own.
        assert!(t.check(b).is_ok());
        t.succeeded(b);
        assert!(t.check(a).is_err());
        t.succeeded(a);
        assert!(t.check(a).is_ok());
    }

    #[test]
    fn the_wait_has_a_cap_and_the_table_a_size() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.9".parse().unwrap();
        let mut last = None;
        for _ in 0..40 {
            last = t.failed(a);
        }
        assert_eq!(last, Some(MAX_WAIT));
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.by_address.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}

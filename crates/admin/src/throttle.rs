//! Failed logins, counted per source address: a few are free, then each address waits,
//! twice as long after every further failure (up to a cap), whatever it types: a correct
//! password during the wait is refused too, or the wait would be no limit at all.
//!
//! An address is an IPv4 address, or an IPv6 /64 (what one client is usually given; an
//! IPv4-mapped address counts as its IPv4 one). Rotating addresses (a local user has all of
//! 127/8, a remote one a /64 or a botnet) is met by a pace over all of them: once
//! [`GLOBAL_FREE`] failures from anywhere fall in [`WINDOW`], passwords are checked at most
//! once per [`GLOBAL_PACE`], whoever asks. The admin still gets in, seconds later; a
//! guesser gets a few hundred tries an hour instead of thousands a second.

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
/// Failures from all addresses in [`WINDOW`] before the global pace begins.
pub const GLOBAL_FREE: usize = 20;
/// The global pace: one password check per this long.
pub const GLOBAL_PACE: Duration = Duration::from_secs(3);

/// The unit failures are counted by: an IPv4 address, or an IPv6 /64.
pub fn class(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Default)]
struct Global {
    /// When recent failures happened (bounded by [`GLOBAL_FREE`] plus one).
    failures: std::collections::VecDeque<Instant>,
    /// The next password check allowed while the pace holds.
    next: Option<Instant>,
}

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
    global: Mutex<Global>,
}

impl Throttle {
    /// `Err(wait)` while `addr` must wait before trying again (its own wait, or the
    /// global pace; a check that passes under the pace takes its turn).
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let addr = class(addr);
        let now = Instant::now();
        {
            let map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(until) = map.get(&addr).and_then(|f| f.until).filter(|u| *u > now) {
                return Err(until - now);
            }
        }
        let mut g = self.global.lock().unwrap_or_else(|p| p.into_inner());
        while g
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            g.failures.pop_front();
        }
        if g.failures.len() < GLOBAL_FREE {
            g.next = None;
            return Ok(());
        }
        match g.next {
            Some(next) if next > now => Err(next - now),
            _ => {
                g.next = Some(now + GLOBAL_PACE);
                Ok(())
            }
        }
    }

    /// Counts a failure of `addr`; the wait it now has, if any.
    pub fn failed(&self, addr: IpAddr) -> Option<Duration> {
        let addr = class(addr);
        let now = Instant::now();
        {
            let mut g = self.global.lock().unwrap_or_else(|p| p.into_inner());
            g.failures.push_back(now);
            while g.failures.len() > GLOBAL_FREE + 1 {
                g.failures.pop_front();
            }
        }
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
            .remove(&class(addr));
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
    fn an_ipv6_64_is_one_client_and_a_mapped_address_its_ipv4() {
        let t = Throttle::default();
        for i in 0..FREE_FAILURES as u16 {
            t.failed(IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 1, 2, i, i, i, i,
            )));
        }
        assert!(t.check("2001:db8:1:2::99".parse().unwrap()).is_err());
        assert!(t.check("2001:db8:1:3::99".parse().unwrap()).is_ok());
        for _ in 0..FREE_FAILURES {
            t.failed("::ffff:192.0.2.7".parse().unwrap());
        }
        assert!(t.check("192.0.2.7".parse().unwrap()).is_err());
    }

    #[test]
    fn rotating_addresses_meet_the_global_pace() {
        let t = Throttle::default();
        // Failures from as many addresses as it takes, none of them limited on its own.
        for i in 0..GLOBAL_FREE as u32 {
            let a = IpAddr::from((0x7f00_0000 + 1000 + i).to_be_bytes());
            assert!(t.check(a).is_ok());
            assert_eq!(t.failed(a), None);
        }
        // Now one check per GLOBAL_PACE, whoever asks: a fresh address takes the turn, the
        // next one (even the admin's) waits for the pace.
        assert!(t.check("127.1.2.3".parse().unwrap()).is_ok());
        let wait = t.check("127.9.9.9".parse().unwrap()).unwrap_err();
        assert!(wait <= GLOBAL_PACE && wait > GLOBAL_PACE - Duration::from_secs(1));
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

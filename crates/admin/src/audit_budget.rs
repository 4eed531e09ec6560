//! What strangers may write into the audit log. A failed login and a POST without a session
//! are audited with their source, but whoever can reach the port must not fill the disk or
//! bury the record with them: per address (as [`crate::throttle::class`] counts them) at
//! most [`PER_ADDRESS`] such entries a minute, at most [`OVERALL`] from everyone; what is
//! left out is counted and said in the next entry that goes in. Entries of signed-in
//! sessions are never held back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries a minute from one address.
pub const PER_ADDRESS: usize = 20;
/// Entries a minute from all strangers.
pub const OVERALL: usize = 200;
const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Window {
    start: Instant,
    total: usize,
    by: HashMap<IpAddr, usize>,
    left_out: u64,
}

/// The budget.
#[derive(Debug)]
pub struct AuditBudget(Mutex<Window>);

impl Default for AuditBudget {
    fn default() -> Self {
        Self(Mutex::new(Window {
            start: Instant::now(),
            total: 0,
            by: HashMap::new(),
            left_out: 0,
        }))
    }
}

impl AuditBudget {
    /// `Some(n)` when an entry from `addr` may be written now, `n` being how many were left
    /// out before it; `None` when it is left out (and counted).
    pub fn admit(&self, addr: IpAddr) -> Option<u64> {
        let addr = crate::throttle::class(addr);
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if w.start.elapsed() >= MINUTE {
            w.start = Instant::now();
            w.total = 0;
            w.by.clear();
        }
        let mine = w.by.get(&addr).copied().unwrap_or(0);
        if mine >= PER_ADDRESS || w.total >= OVERALL {
            w.left_out += 1;
            return None;
        }
        w.total += 1;
        // The map holds at most OVERALL addresses a minute.
        *w.by.entry(addr).or_default() += 1;
        Some(std::mem::take(&mut w.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_and_everyone_have_a_budget_and_what_is_left_out_is_counted() {
        let b = AuditBudget::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..PER_ADDRESS {
            assert_eq!(b.admit(a), Some(0));
        }
        assert_eq!(b.admit(a), None);
        assert_eq!(b.admit(a), None);
        // Another address gets in, and says what was left out.
        assert_eq!(b.admit("192.0.2.2".parse().unwrap()), Some(2));
        for i in 0..OVERALL as u32 {
            b.admit(IpAddr::from((0xc633_6400 + i).to_be_bytes()));
        }
        assert_eq!(b.admit("198.18.0.1".parse().unwrap()), None);
        assert!(b.0.lock().unwrap().by.len() <= OVERALL);
    }
}

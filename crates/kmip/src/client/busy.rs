//! When every server is busy: which failures pass with time, and the waits between rounds
//! (also the daemon's, between its attempts to reach a key server).
//! After a site-wide power cut hundreds of appliances reach for the same key server in
//! the same second; a server that refuses or resets some of them (a full accept queue, a
//! per-address cap, a restart) is best met by coming back a little later, at a random
//! moment, not by failing the unlock.

use std::time::Duration;

use super::ClientError;
use crate::enums::Operation;

/// Operations that have the same effect however often they run: safe to send again when
/// the first attempt may have reached the server before the connection failed.
fn idempotent(op: Operation) -> bool {
    [
        Operation::GET,
        Operation::GET_ATTRIBUTES,
        Operation::GET_ATTRIBUTE_LIST,
        Operation::LOCATE,
        Operation::QUERY,
        Operation::DISCOVER_VERSIONS,
    ]
    .contains(&op)
}

/// True when `e` (the failure of a whole round for `op`) may pass if tried again a little
/// later.
pub(super) fn passes(e: &ClientError, op: Operation) -> bool {
    match e {
        // Nothing was sent: a server restarting, or one whose accept queue is full.
        ClientError::Refused { .. } | ClientError::ConnectTimeout { .. } => true,
        // Reset, closed without an answer, or no answer in time (a server overloaded by the
        // storm: PyKMIP's, with 200 clients at once): maybe after the request took effect.
        ClientError::Io { .. } | ClientError::Closed { .. } | ClientError::Timeout { .. } => {
            idempotent(op)
        }
        ClientError::AllServersFailed(all) => all.iter().all(|e| passes(e, op)),
        // A certificate, a credential, an answer: the same again next time.
        _ => false,
    }
}

/// Bounded exponential backoff with jitter: waits that start at `first` and double up to
/// `cap`, each drawn between half and all of its nominal length, so that many clients
/// failing together (a power cut) do not come back in step. The client's rounds use
/// 100 ms to 2 s ([`Backoff::default`]); the daemon's attempts to reach a key server,
/// 1 s to its `retry_max_secs`.
#[derive(Debug, Clone)]
pub struct Backoff {
    nominal: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(2))
    }
}

impl Backoff {
    /// Waits from `first` (or `cap`, if smaller), doubling, never above `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            nominal: first.min(cap),
            cap,
        }
    }

    /// The wait before the next attempt.
    pub fn wait(&mut self) -> Duration {
        let n = self.nominal;
        self.nominal = (n * 2).min(self.cap);
        let mut b = [0u8; 4];
        let r = if openssl::rand::rand_bytes(&mut b).is_ok() {
            f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
        } else {
            1.0
        };
        n.mul_f64(0.5 + 0.5 * r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_two_seconds_with_jitter() {
        let mut b = Backoff::default();
        let waits: Vec<f64> = (0..8).map(|_| b.wait().as_secs_f64()).collect();
        for (w, n) in waits.iter().zip([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]) {
            assert!(*w >= n / 2.0 - 1e-9 && *w <= n + 1e-9, "{waits:?}");
        }
        // Jitter: eight draws of the capped wait are not all the same.
        let capped: Vec<Duration> = (0..8).map(|_| b.wait()).collect();
        assert!(capped.iter().any(|w| *w != capped[0]), "{capped:?}");
        // The daemon's: 1 s up to its cap; a cap below the first wait is the first.
        let mut d = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let waits: Vec<f64> = (0..6).map(|_| d.wait().as_secs_f64()).collect();
        for (w, n) in waits.iter().zip([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]) {
            assert!(*w >= n / 2.0 - 1e-9 && *w <= n + 1e-9, "{waits:?}");
        }
        let mut small = Backoff::new(Duration::from_secs(1), Duration::from_millis(300));
        assert!(small.wait() <= Duration::from_millis(300));
    }

    #[test]
    fn only_what_cannot_take_effect_twice_is_sent_again() {
        let closed = ClientError::Closed {
            server: "kms:5696".into(),
        };
        assert!(passes(&closed, Operation::GET));
        assert!(!passes(&closed, Operation::CREATE));
        let refused = ClientError::Refused {
            server: "kms:5696".into(),
        };
        assert!(passes(&refused, Operation::CREATE));
        let all = ClientError::AllServersFailed(vec![refused, closed]);
        assert!(passes(&all, Operation::LOCATE));
        assert!(!passes(&all, Operation::REVOKE));
    }
}

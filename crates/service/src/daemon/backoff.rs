//! Bounded exponential backoff with jitter, for the attempts to reach a key server while
//! none answers: 1 s, 2 s, 4 s ... up to the configured cap, each wait drawn between half
//! and all of its nominal length so that many appliances restarting together (a power
//! cut) do not hit the key servers in lockstep.

use std::time::Duration;

/// The waits between attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// Starting at 1 s (or the cap, if smaller), never above `cap`.
    pub fn new(cap: Duration) -> Self {
        Self {
            next: Duration::from_secs(1).min(cap),
            cap,
        }
    }

    /// The wait before the next attempt.
    pub fn wait(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.cap);
        let mut b = [0u8; 4];
        let r = if openssl::rand::rand_bytes(&mut b).is_ok() {
            f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
        } else {
            1.0
        };
        nominal.mul_f64(0.5 + 0.5 * r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_stays_there() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let waits: Vec<f64> = (0..8).map(|_| b.wait().as_secs_f64()).collect();
        for (w, nominal) in waits.iter().zip([1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]) {
            assert!(
                *w >= nominal / 2.0 - 1e-9 && *w <= nominal + 1e-9,
                "{waits:?}"
            );
        }
        let mut small = Backoff::new(Duration::from_millis(300));
        assert!(small.wait() <= Duration::from_millis(300));
    }
}

//! A token bucket: how the agent paces what it must not do too often (packets sent, firewall
//! reads), shared by every thread that does it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Budget {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>, // (tokens, last refill)
}

impl Budget {
    /// `per_second` takes a second on average, `burst` at once at most (and to start with).
    pub fn new(per_second: f64, burst: f64) -> Budget {
        let per_second = per_second.max(f64::MIN_POSITIVE);
        let burst = burst.max(1.0);
        Budget { per_second, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// How long to wait before one more may go, taking it (zero: go now).
    pub fn take_at(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        let after = tokens - 1.0;
        *state = (after, now.max(last));
        if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.per_second)
        }
    }

    /// Blocks until one more may go.
    pub fn take(&self) {
        let wait = self.take_at(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_refills_with_time() {
        let budget = Budget::new(100.0, 10.0);
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(budget.take_at(start), Duration::ZERO);
        }
        // The 11th at the same instant waits a hundredth of a second; the 12th, two.
        assert_eq!(budget.take_at(start), Duration::from_millis(10));
        assert_eq!(budget.take_at(start), Duration::from_millis(20));
        // A second later the bucket is full again, but never fuller than its burst.
        let later = start + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(budget.take_at(later), Duration::ZERO);
        }
        assert!(budget.take_at(later) > Duration::ZERO);
    }
}

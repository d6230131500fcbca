//! A count-based sliding window over the last N calls: how many failed and how many were slow.

use std::collections::VecDeque;

/// Why the window says the breaker should open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TripReason {
    FailureRate { rate: f64, threshold: f64, calls: usize },
    SlowCallRate { rate: f64, threshold: f64, calls: usize },
}

impl std::fmt::Display for TripReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TripReason::FailureRate { rate, threshold, calls } => {
                write!(f, "failure rate {:.0}% ≥ {:.0}% over the last {calls} calls", rate * 100.0, threshold * 100.0)
            }
            TripReason::SlowCallRate { rate, threshold, calls } => {
                write!(f, "slow-call rate {:.0}% ≥ {:.0}% over the last {calls} calls", rate * 100.0, threshold * 100.0)
            }
        }
    }
}

/// The thresholds a window is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub minimum_calls: usize,
    pub failure_rate: f64,
    pub slow_call_rate: f64,
}

/// The last `capacity` calls, with running counts so every question is O(1).
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    capacity: usize,
    calls: VecDeque<Call>,
    failures: usize,
    slow: usize,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    failed: bool,
    slow: bool,
}

impl SlidingWindow {
    /// A window of at least one call.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { capacity, calls: VecDeque::with_capacity(capacity), failures: 0, slow: 0 }
    }

    pub fn push(&mut self, failed: bool, slow: bool) {
        if self.calls.len() == self.capacity
            && let Some(old) = self.calls.pop_front()
        {
            self.failures -= usize::from(old.failed);
            self.slow -= usize::from(old.slow);
        }
        self.calls.push_back(Call { failed, slow });
        self.failures += usize::from(failed);
        self.slow += usize::from(slow);
    }

    pub fn clear(&mut self) {
        self.calls.clear();
        self.failures = 0;
        self.slow = 0;
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn failures(&self) -> usize {
        self.failures
    }

    pub fn slow_calls(&self) -> usize {
        self.slow
    }

    /// Share of failed calls in the window; 0 when empty.
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls.len())
    }

    /// Share of slow calls (failed or not) in the window; 0 when empty.
    pub fn slow_call_rate(&self) -> f64 {
        ratio(self.slow, self.calls.len())
    }

    /// Whether the breaker should open: only once the window holds the minimum number of calls,
    /// so that two failures out of two do not trip it.
    pub fn trip_reason(&self, thresholds: &Thresholds) -> Option<TripReason> {
        let calls = self.calls.len();
        if calls < thresholds.minimum_calls {
            return None;
        }
        let failure_rate = self.failure_rate();
        if failure_rate >= thresholds.failure_rate {
            return Some(TripReason::FailureRate { rate: failure_rate, threshold: thresholds.failure_rate, calls });
        }
        let slow_rate = self.slow_call_rate();
        if slow_rate >= thresholds.slow_call_rate {
            return Some(TripReason::SlowCallRate { rate: slow_rate, threshold: thresholds.slow_call_rate, calls });
        }
        None
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The running counts always equal a recount of the last `capacity` calls.
        #[test]
        fn counts_match_a_recount_of_the_last_n_calls(
            capacity in 1usize..40,
            calls in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..200),
        ) {
            let mut window = SlidingWindow::new(capacity);
            for (i, &(failed, slow)) in calls.iter().enumerate() {
                window.push(failed, slow);
                let recent = &calls[(i + 1).saturating_sub(capacity)..=i];
                prop_assert_eq!(window.len(), recent.len());
                prop_assert_eq!(window.failures(), recent.iter().filter(|c| c.0).count());
                prop_assert_eq!(window.slow_calls(), recent.iter().filter(|c| c.1).count());
                prop_assert!((0.0..=1.0).contains(&window.failure_rate()));
            }
        }
    }

    #[test]
    fn needs_the_minimum_calls_before_judging() {
        let thresholds = Thresholds { minimum_calls: 10, failure_rate: 0.5, slow_call_rate: 0.8 };
        let mut window = SlidingWindow::new(20);
        for _ in 0..9 {
            window.push(true, false);
        }
        assert_eq!(window.trip_reason(&thresholds), None, "9 failures are below the minimum of 10 calls");
        window.push(false, false);
        assert!(matches!(window.trip_reason(&thresholds), Some(TripReason::FailureRate { calls: 10, .. })));
    }
}

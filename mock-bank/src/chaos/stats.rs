//! Counters of every injected fault kind, read by `GET /chaos/stats`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use chrono::{DateTime, Utc};
pub use wire::chaos::{ChaosStats as StatsSnapshot, InjectedCounts};

use super::plan::{Decision, Fault};

#[derive(Debug)]
pub struct FaultStats {
    since: Mutex<DateTime<Utc>>,
    requests: AtomicU64,
    none: AtomicU64,
    failure: AtomicU64,
    ambiguous: AtomicU64,
    timeout: AtomicU64,
    reset: AtomicU64,
    throttle: AtomicU64,
    outage: AtomicU64,
    slow: AtomicU64,
    forced: AtomicU64,
}

impl Default for FaultStats {
    fn default() -> Self {
        Self {
            since: Mutex::new(Utc::now()),
            requests: AtomicU64::new(0),
            none: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            ambiguous: AtomicU64::new(0),
            timeout: AtomicU64::new(0),
            reset: AtomicU64::new(0),
            throttle: AtomicU64::new(0),
            outage: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            forced: AtomicU64::new(0),
        }
    }
}

impl FaultStats {
    pub fn record(&self, decision: &Decision, forced: bool) {
        self.requests.fetch_add(1, Relaxed);
        let counter = match decision.fault {
            Fault::None => &self.none,
            Fault::Failure { .. } => &self.failure,
            Fault::Ambiguous(_) => &self.ambiguous,
            Fault::Timeout { .. } => &self.timeout,
            Fault::Reset => &self.reset,
            Fault::Throttle { .. } => &self.throttle,
            Fault::Outage => &self.outage,
        };
        counter.fetch_add(1, Relaxed);
        if decision.slow {
            self.slow.fetch_add(1, Relaxed);
        }
        if forced {
            self.forced.fetch_add(1, Relaxed);
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            since: *self.since.lock().unwrap_or_else(|p| p.into_inner()),
            requests: self.requests.load(Relaxed),
            injected: InjectedCounts {
                none: self.none.load(Relaxed),
                failure: self.failure.load(Relaxed),
                ambiguous: self.ambiguous.load(Relaxed),
                timeout: self.timeout.load(Relaxed),
                reset: self.reset.load(Relaxed),
                throttle: self.throttle.load(Relaxed),
                outage: self.outage.load(Relaxed),
                slow: self.slow.load(Relaxed),
            },
            forced_by_header: self.forced.load(Relaxed),
        }
    }

    pub fn clear(&self) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Utc::now();
        for counter in [
            &self.requests,
            &self.none,
            &self.failure,
            &self.ambiguous,
            &self.timeout,
            &self.reset,
            &self.throttle,
            &self.outage,
            &self.slow,
            &self.forced,
        ] {
            counter.store(0, Relaxed);
        }
    }
}

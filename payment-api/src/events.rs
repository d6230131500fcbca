//! The live event feed behind `GET /admin/stream`: `stats` every second, `breaker` transitions,
//! `payment` state changes and `log` records.
//!
//! Events go through a bounded broadcast channel, serialised once. Sending never waits, so a slow
//! subscriber can never slow payments: it falls behind, misses the oldest events, and is told how
//! many it missed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use resilience::{BreakerSnapshot, Transition};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
pub use wire::{BreakerEvent, BreakerView, PaymentEvent};

/// One event as sent to every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Increases by one per event: a subscriber sees its events in order, with gaps only where it
    /// lagged.
    pub id: u64,
    pub kind: &'static str,
    pub data: String,
}

#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Arc<Envelope>>,
    next_id: AtomicU64,
}

impl Events {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender, next_id: AtomicU64::new(1) }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.sender.subscribe()
    }

    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, kind: &'static str, data: &impl Serialize) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let Ok(data) = serde_json::to_string(data) else { return };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.sender.send(Arc::new(Envelope { id, kind, data }));
    }
}

/// The breaker as the API shows it: its snapshot and its thresholds.
pub fn breaker_view(breaker: &resilience::Breaker) -> BreakerView {
    let config = breaker.config();
    BreakerView {
        failure_rate_threshold: config.failure_rate_threshold,
        slow_call_rate_threshold: config.slow_call_rate_threshold,
        ..snapshot_view(&breaker.snapshot())
    }
}

fn snapshot_view(s: &BreakerSnapshot) -> BreakerView {
    BreakerView {
        state: state_of(s.state),
        failure_rate: s.failure_rate,
        slow_call_rate: s.slow_call_rate,
        calls_in_window: s.calls_in_window,
        rejected: s.rejected,
        opened_at: s.opened_at.map(DateTime::<Utc>::from),
        open_until: s.open_until.map(DateTime::<Utc>::from),
        trips: s.trips,
        probes_in_flight: s.probes_in_flight,
        probes_succeeded: s.probes_succeeded,
        failure_rate_threshold: 0.0,
        slow_call_rate_threshold: 0.0,
    }
}

/// The breaker's state on the wire.
fn state_of(state: resilience::BreakerState) -> wire::BreakerState {
    match state {
        resilience::BreakerState::Closed => wire::BreakerState::Closed,
        resilience::BreakerState::Open => wire::BreakerState::Open,
        resilience::BreakerState::HalfOpen => wire::BreakerState::HalfOpen,
        resilience::BreakerState::ForcedOpen => wire::BreakerState::ForcedOpen,
        resilience::BreakerState::ForcedClosed => wire::BreakerState::ForcedClosed,
    }
}

/// A breaker transition, as streamed.
pub fn breaker_event(t: &Transition) -> BreakerEvent {
    BreakerEvent {
        from: state_of(t.from),
        to: state_of(t.to),
        reason: t.reason.to_string(),
        at: DateTime::<Utc>::from(t.at),
        open_for_ms: t.open_for.map(|d| d.as_millis() as u64),
        bank: None,
    }
}

/// Recent payment latencies, for percentiles over a sliding window.
#[derive(Debug, Default)]
pub struct LatencyWindow {
    samples: Mutex<VecDeque<(Instant, Duration)>>,
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_SAMPLES: usize = 8_192;

impl LatencyWindow {
    pub fn record(&self, took: Duration) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((Instant::now(), took));
    }

    /// p50, p95 and p99 in milliseconds over the last minute (zeros when empty).
    pub fn percentiles(&self) -> [f64; 3] {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let horizon = Instant::now().checked_sub(WINDOW);
        while samples.front().is_some_and(|(at, _)| horizon.is_some_and(|h| *at < h)) {
            samples.pop_front();
        }
        let mut millis: Vec<f64> = samples.iter().map(|(_, d)| d.as_secs_f64() * 1_000.0).collect();
        drop(samples);
        if millis.is_empty() {
            return [0.0; 3];
        }
        millis.sort_by(f64::total_cmp);
        let at = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
        [at(0.50), at(0.95), at(0.99)]
    }
}

pub fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_the_window() {
        let window = LatencyWindow::default();
        assert_eq!(window.percentiles(), [0.0; 3]);
        for ms in 1..=100 {
            window.record(Duration::from_millis(ms));
        }
        let [p50, p95, p99] = window.percentiles();
        assert!((p50 - 51.0).abs() < 1.5 && (p95 - 95.0).abs() < 1.5 && (p99 - 99.0).abs() < 1.5, "{p50} {p95} {p99}");
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_many_events_it_missed() {
        let events = Events::new(4);
        let mut slow = events.subscribe();
        for i in 0..10 {
            events.publish("payment", &i);
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(missed)) => assert_eq!(missed, 6),
            other => panic!("{other:?}"),
        }
        let next = slow.recv().await.unwrap();
        assert_eq!((next.id, next.data.as_str()), (7, "6"), "then the newest events, in order");
    }
}

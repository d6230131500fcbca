//! The glue between this crate's breaker and `failsafe`'s state machine: a failure policy that asks
//! the sliding window, and an instrument that records which transition failsafe just made.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failsafe::{FailurePolicy, Instrument};

use super::window::{SlidingWindow, Thresholds};

pub(super) type Machine = failsafe::StateMachine<WindowPolicy, TransitionLatch>;

pub(super) fn lock_window(window: &Mutex<SlidingWindow>) -> std::sync::MutexGuard<'_, SlidingWindow> {
    // The window is plain counters updated in one step; a poisoned lock still holds valid counts.
    window.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// failsafe's `FailurePolicy`, answered by the count-based sliding window.
///
/// It tells failsafe to open for a *zero* duration: failsafe measures open time with
/// `std::time::Instant` on its own private clock (which tokio's paused clock cannot drive) and its
/// built-in backoffs are whole seconds, so [`super::Breaker`] keeps the real open period itself,
/// on tokio's clock with millisecond precision, and only then lets failsafe go half-open.
#[derive(Debug)]
pub(super) struct WindowPolicy {
    pub window: Arc<Mutex<SlidingWindow>>,
    pub thresholds: Thresholds,
}

impl FailurePolicy for WindowPolicy {
    // The breaker pushes every call into the window itself (failsafe only reports successes and
    // failures, not slowness), so there is nothing to do here.
    fn record_success(&mut self) {}

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        lock_window(&self.window).trip_reason(&self.thresholds).map(|_| Duration::ZERO)
    }

    fn revived(&mut self) {
        lock_window(&self.window).clear();
    }
}

pub(super) const NONE: u8 = 0;
pub(super) const OPENED: u8 = 1;
pub(super) const HALF_OPENED: u8 = 2;
pub(super) const CLOSED: u8 = 3;

/// failsafe keeps its state private; its `Instrument` hooks are the only way to see it change.
/// The breaker clears the latch before each call into failsafe and reads it after, all under its
/// own lock, so it knows exactly which transition that call caused.
#[derive(Debug, Clone, Default)]
pub(super) struct TransitionLatch(pub Arc<AtomicU8>);

impl TransitionLatch {
    pub fn take(&self) -> u8 {
        self.0.swap(NONE, Ordering::Relaxed)
    }
}

impl Instrument for TransitionLatch {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.0.store(OPENED, Ordering::Relaxed);
    }

    fn on_half_open(&self) {
        self.0.store(HALF_OPENED, Ordering::Relaxed);
    }

    fn on_closed(&self) {
        self.0.store(CLOSED, Ordering::Relaxed);
    }
}

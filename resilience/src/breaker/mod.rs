//! The circuit breaker: failsafe's state machine at the core, with the gaps it leaves closed here.
//!
//! | failsafe gap | what this module does |
//! |---|---|
//! | its state is private | a `TransitionLatch` instrument reports each transition; the breaker keeps the observable state |
//! | half-open admits every call, and one failure reopens | at most `half_open_probes` calls are admitted, and judged by their failure rate against the threshold (as resilience4j does) |
//! | open → half-open happens lazily on the next call | still lazy, but `open_until` is exposed so a dashboard can count down |
//! | a future dropped by an outer timeout is never recorded | [`Permit`] is a guard: dropped unrecorded, it frees its probe slot; [`crate::Guard`] puts the per-attempt timeout inside the permit |
//! | open time on its own `std` clock, backoffs in whole seconds | open periods are kept here on tokio's clock, in milliseconds, growing on repeated trips |
//!
//! Plus operator overrides (`forced_open`, `forced_closed`, back to automatic), a `watch` of the
//! current [`BreakerSnapshot`] and a broadcast stream of [`Transition`]s with their reasons.

mod adapter;
pub mod config;
pub mod window;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{info, warn};

pub use config::BreakerConfig;
pub use window::{SlidingWindow, Thresholds, TripReason};

use crate::error::ConfigError;
use adapter::{CLOSED, HALF_OPENED, Machine, OPENED, TransitionLatch, WindowPolicy, lock_window};

/// What a person or a dashboard sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    ForcedClosed,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who decides the state: the failure policy, or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Auto,
    ForcedOpen,
    ForcedClosed,
}

/// Why the breaker changed state.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionReason {
    /// The window crossed a threshold.
    Tripped(TripReason),
    /// The open period elapsed and a call arrived.
    OpenElapsed,
    /// Enough half-open probes failed (or were slow) that their failure rate reached the threshold.
    ProbesFailed { failed: u32, probes: u32 },
    /// The half-open probes finished with a failure rate under the threshold.
    ProbesSucceeded { succeeded: u32, probes: u32 },
    /// An operator set the mode.
    Operator(Mode),
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionReason::Tripped(reason) => reason.fmt(f),
            TransitionReason::OpenElapsed => f.write_str("open period elapsed; probing"),
            TransitionReason::ProbesFailed { failed, probes } => {
                write!(f, "{failed} of {probes} half-open probes failed or were slow")
            }
            TransitionReason::ProbesSucceeded { succeeded, probes } => {
                write!(f, "{succeeded} of {probes} half-open probes succeeded")
            }
            TransitionReason::Operator(Mode::Auto) => f.write_str("operator returned the breaker to automatic"),
            TransitionReason::Operator(Mode::ForcedOpen) => f.write_str("operator forced the breaker open"),
            TransitionReason::Operator(Mode::ForcedClosed) => f.write_str("operator forced the breaker closed"),
        }
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: TransitionReason,
    pub at: SystemTime,
    /// For a transition to open: how long it stays open.
    pub open_for: Option<Duration>,
}

/// The breaker at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub calls_in_window: usize,
    /// Calls refused since start.
    pub rejected: u64,
    pub opened_at: Option<SystemTime>,
    /// When the breaker will let a probe through (it goes half-open on the first call after).
    pub open_until: Option<SystemTime>,
    /// The same moment on tokio's clock, for countdowns and paused-clock tests.
    pub open_until_instant: Option<Instant>,
    /// Consecutive trips without closing; the open period grows with it.
    pub trips: u32,
    pub probes_in_flight: u32,
    pub probes_succeeded: u32,
    pub probes_failed: u32,
}

/// A refused call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state}; call refused")]
pub struct Rejected {
    pub state: BreakerState,
    /// When the breaker will next admit a call, if known.
    pub retry_after: Option<Duration>,
}

/// A circuit breaker. Cloning it is cheap and every clone is the same breaker.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker").field("snapshot", &*self.shared.snapshot.borrow()).finish()
    }
}

struct Shared {
    config: BreakerConfig,
    core: Mutex<Core>,
    snapshot: watch::Sender<BreakerSnapshot>,
    transitions: broadcast::Sender<Transition>,
}

struct Core {
    machine: Machine,
    latch: TransitionLatch,
    window: Arc<Mutex<SlidingWindow>>,
    mode: Mode,
    /// The automatic state, as failsafe last reported it.
    state: BreakerState,
    /// Bumped on every transition: a permit from an earlier state is not judged by the new one.
    epoch: u64,
    opened_at: Option<SystemTime>,
    open_until: Option<Instant>,
    open_until_wall: Option<SystemTime>,
    trips: u32,
    probes_in_flight: u32,
    probes_succeeded: u32,
    probes_failed: u32,
    rejected: u64,
}

impl Core {
    fn visible_state(&self) -> BreakerState {
        match self.mode {
            Mode::Auto => self.state,
            Mode::ForcedOpen => BreakerState::ForcedOpen,
            Mode::ForcedClosed => BreakerState::ForcedClosed,
        }
    }

    fn snapshot(&self) -> BreakerSnapshot {
        let window = lock_window(&self.window);
        BreakerSnapshot {
            state: self.visible_state(),
            failure_rate: window.failure_rate(),
            slow_call_rate: window.slow_call_rate(),
            calls_in_window: window.len(),
            rejected: self.rejected,
            opened_at: self.opened_at,
            open_until: self.open_until_wall,
            open_until_instant: self.open_until,
            trips: self.trips,
            probes_in_flight: self.probes_in_flight,
            probes_succeeded: self.probes_succeeded,
            probes_failed: self.probes_failed,
        }
    }
}

/// Permission for one call. Record its result with [`Permit::record`]; a permit dropped without
/// a result (its future was cancelled) frees its half-open probe slot and judges nothing.
#[must_use = "a permit must be recorded, or the call's result is lost to the breaker"]
pub struct Permit {
    shared: Arc<Shared>,
    epoch: u64,
    probe: bool,
    started: Instant,
    recorded: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("epoch", &self.epoch).field("probe", &self.probe).finish()
    }
}

impl Permit {
    /// Records the call's result; whether it was slow is measured from when the permit was given.
    pub fn record(mut self, failed: bool) {
        self.recorded = true;
        self.shared.record(self.epoch, self.probe, Some(failed), self.started.elapsed());
    }

    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Measures the call from now: for a permit taken before the work it guards begins.
    pub fn restart_clock(&mut self) {
        self.started = Instant::now();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            self.shared.record(self.epoch, self.probe, None, self.started.elapsed());
        }
    }
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let window = Arc::new(Mutex::new(SlidingWindow::new(config.window_size)));
        let thresholds = Thresholds {
            minimum_calls: config.minimum_calls,
            failure_rate: config.failure_rate_threshold,
            slow_call_rate: config.slow_call_rate_threshold,
        };
        let latch = TransitionLatch::default();
        let machine = failsafe::Config::new()
            .failure_policy(WindowPolicy { window: Arc::clone(&window), thresholds })
            .instrument(latch.clone())
            .build();
        latch.take(); // failsafe reports "closed" once at construction.
        let core = Core {
            machine,
            latch,
            window,
            mode: Mode::Auto,
            state: BreakerState::Closed,
            epoch: 0,
            opened_at: None,
            open_until: None,
            open_until_wall: None,
            trips: 0,
            probes_in_flight: 0,
            probes_succeeded: 0,
            probes_failed: 0,
            rejected: 0,
        };
        let (snapshot, _) = watch::channel(core.snapshot());
        let (transitions, _) = broadcast::channel(256);
        Ok(Self { shared: Arc::new(Shared { config, core: Mutex::new(core), snapshot, transitions }) })
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// Asks to make a call. Refused while open (until the open period has elapsed), while
    /// half-open with every probe slot taken, and while forced open.
    pub fn permit(&self) -> Result<Permit, Rejected> {
        self.shared.permit().map(|(epoch, probe)| Permit {
            shared: Arc::clone(&self.shared),
            epoch,
            probe,
            started: Instant::now(),
            recorded: false,
        })
    }

    /// The current state and rates.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.shared.snapshot.borrow().clone()
    }

    /// A receiver that always holds the latest snapshot.
    pub fn watch(&self) -> watch::Receiver<BreakerSnapshot> {
        self.shared.snapshot.subscribe()
    }

    /// Every transition from now on, with its reason. A receiver that falls behind by more than
    /// 256 transitions is told how many it missed.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.shared.transitions.subscribe()
    }

    /// Operator override: force open, force closed, or back to automatic (closed, window cleared).
    pub fn set_mode(&self, mode: Mode) {
        self.shared.set_mode(mode);
    }

    pub fn mode(&self) -> Mode {
        self.shared.lock().mode
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every critical section leaves the core consistent before anything can panic.
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn permit(&self) -> Result<(u64, bool), Rejected> {
        let mut core = self.lock();
        let admitted = match core.mode {
            Mode::ForcedOpen => Err(Rejected { state: BreakerState::ForcedOpen, retry_after: None }),
            Mode::ForcedClosed => Ok(false),
            Mode::Auto => match core.state {
                BreakerState::Closed => Ok(false),
                BreakerState::Open => {
                    let now = Instant::now();
                    let until = core.open_until.unwrap_or(now);
                    if now < until {
                        Err(Rejected { state: BreakerState::Open, retry_after: Some(until - now) })
                    } else if self.enter_half_open(&mut core) {
                        self.admit_probe(&mut core)
                    } else {
                        Err(Rejected { state: BreakerState::Open, retry_after: Some(Duration::from_millis(1)) })
                    }
                }
                _ => self.admit_probe(&mut core),
            },
        };
        match admitted {
            Ok(probe) => {
                if probe {
                    self.publish(&core);
                }
                Ok((core.epoch, probe))
            }
            Err(rejected) => {
                core.rejected += 1;
                self.publish(&core);
                Err(rejected)
            }
        }
    }

    fn admit_probe(&self, core: &mut Core) -> Result<bool, Rejected> {
        if core.probes_in_flight + core.probes_succeeded + core.probes_failed < self.config.half_open_probes {
            core.probes_in_flight += 1;
            Ok(true)
        } else {
            Err(Rejected { state: BreakerState::HalfOpen, retry_after: None })
        }
    }

    /// Lets failsafe go half-open now that our open period has elapsed. Its own open period was
    /// zero, so it does as soon as it is asked.
    fn enter_half_open(&self, core: &mut Core) -> bool {
        core.latch.take();
        let permitted = core.machine.is_call_permitted();
        if core.latch.take() != HALF_OPENED && !permitted {
            return false;
        }
        core.probes_in_flight = 0;
        core.probes_succeeded = 0;
        core.probes_failed = 0;
        self.transition(core, BreakerState::HalfOpen, TransitionReason::OpenElapsed, None);
        true
    }

    fn record(&self, epoch: u64, probe: bool, failed: Option<bool>, elapsed: Duration) {
        let mut core = self.lock();
        if epoch != core.epoch || core.mode == Mode::ForcedOpen {
            // Started under another state (or refused by the operator since): says nothing now.
            return;
        }
        let Some(failed) = failed else {
            if probe {
                core.probes_in_flight = core.probes_in_flight.saturating_sub(1);
                self.publish(&core);
            }
            return;
        };
        let slow = elapsed > self.config.slow_call_duration;
        lock_window(&core.window).push(failed, slow);
        if core.mode == Mode::ForcedClosed {
            self.publish(&core);
            return;
        }
        if probe {
            // Half-open is judged like resilience4j: by the failure rate over the probes, against
            // the same threshold as the window. It reopens as soon as that rate is reached
            // whatever the remaining probes do, and closes when all probes finished under it.
            core.probes_in_flight = core.probes_in_flight.saturating_sub(1);
            if failed || slow {
                core.probes_failed += 1;
            } else {
                core.probes_succeeded += 1;
            }
            let probes = self.config.half_open_probes;
            let failed_share = f64::from(core.probes_failed) / f64::from(probes);
            if failed_share >= self.config.failure_rate_threshold {
                core.latch.take();
                core.machine.on_error();
                if core.latch.take() == OPENED {
                    let failed = core.probes_failed;
                    self.open(&mut core, TransitionReason::ProbesFailed { failed, probes });
                }
            } else if core.probes_succeeded + core.probes_failed >= probes {
                core.latch.take();
                core.machine.on_success();
                if core.latch.take() == CLOSED {
                    let succeeded = core.probes_succeeded;
                    self.close(&mut core, TransitionReason::ProbesSucceeded { succeeded, probes });
                }
            }
        } else if failed || slow {
            core.latch.take();
            core.machine.on_error();
            if core.latch.take() == OPENED {
                let reason = lock_window(&core.window).trip_reason(&self.thresholds());
                match reason {
                    Some(reason) => self.open(&mut core, TransitionReason::Tripped(reason)),
                    None => self.open(&mut core, TransitionReason::ProbesFailed { failed: 1, probes: 1 }),
                }
            }
        } else {
            core.machine.on_success();
        }
        self.publish(&core);
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            minimum_calls: self.config.minimum_calls,
            failure_rate: self.config.failure_rate_threshold,
            slow_call_rate: self.config.slow_call_rate_threshold,
        }
    }

    fn open(&self, core: &mut Core, reason: TransitionReason) {
        core.trips += 1;
        let open_for = self.config.open_duration_for(core.trips);
        let now = SystemTime::now();
        core.opened_at = Some(now);
        core.open_until = Some(Instant::now() + open_for);
        core.open_until_wall = Some(now + open_for);
        core.probes_in_flight = 0;
        core.probes_succeeded = 0;
        core.probes_failed = 0;
        self.transition(core, BreakerState::Open, reason, Some(open_for));
    }

    fn close(&self, core: &mut Core, reason: TransitionReason) {
        core.trips = 0;
        core.opened_at = None;
        core.open_until = None;
        core.open_until_wall = None;
        core.probes_in_flight = 0;
        core.probes_succeeded = 0;
        core.probes_failed = 0;
        lock_window(&core.window).clear();
        self.transition(core, BreakerState::Closed, reason, None);
    }

    fn set_mode(&self, mode: Mode) {
        let mut core = self.lock();
        if core.mode == mode {
            return;
        }
        core.mode = mode;
        match mode {
            Mode::Auto => {
                core.machine.reset();
                core.latch.take();
                self.close(&mut core, TransitionReason::Operator(mode));
            }
            Mode::ForcedOpen | Mode::ForcedClosed => {
                let to = core.visible_state();
                self.transition(&mut core, to, TransitionReason::Operator(mode), None);
            }
        }
        self.publish(&core);
    }

    /// Moves to `to` (the automatic state, unless an operator mode is set), announces it, and
    /// makes permits of the previous state stale.
    fn transition(&self, core: &mut Core, to: BreakerState, reason: TransitionReason, open_for: Option<Duration>) {
        let from = self.snapshot.borrow().state;
        if matches!(to, BreakerState::Closed | BreakerState::Open | BreakerState::HalfOpen) {
            core.state = to;
        }
        core.epoch += 1;
        let to = core.visible_state();
        let transition = Transition { from, to, reason, at: SystemTime::now(), open_for };
        match to {
            BreakerState::Open | BreakerState::ForcedOpen => {
                warn!(from = %from, to = %to, reason = %transition.reason, open_ms = open_for.map(|d| d.as_millis() as u64), "circuit breaker opened");
            }
            _ => info!(from = %from, to = %to, reason = %transition.reason, "circuit breaker state changed"),
        }
        let _ = self.transitions.send(transition);
        self.publish(core);
    }

    fn publish(&self, core: &Core) {
        self.snapshot.send_replace(core.snapshot());
    }
}

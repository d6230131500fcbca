//! The circuit breaker, driven by tokio's paused clock: thresholds, minimum calls, slow calls,
//! half-open probes under real thread concurrency, growing open periods, operator overrides, and
//! what it reports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use resilience::breaker::TripReason;
use resilience::{Breaker, BreakerConfig, BreakerState, Mode, TransitionReason};
use tokio::time::advance;

/// Small enough to count by hand: the last 20 calls (at least 10), 3 half-open probes.
fn small() -> BreakerConfig {
    BreakerConfig { window_size: 20, minimum_calls: 10, half_open_probes: 3, ..BreakerConfig::default() }
}

fn breaker() -> Breaker {
    Breaker::new(small()).unwrap()
}

fn record(breaker: &Breaker, failed: bool, times: usize) {
    for _ in 0..times {
        breaker.permit().expect("permitted").record(failed);
    }
}

fn state(breaker: &Breaker) -> BreakerState {
    breaker.snapshot().state
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_threshold_and_not_before() {
    let b = breaker();
    record(&b, false, 6);
    record(&b, true, 4);
    assert_eq!(state(&b), BreakerState::Closed, "40% of 10");
    record(&b, true, 1);
    assert_eq!(state(&b), BreakerState::Closed, "5 of 11 is 45%");
    record(&b, true, 1);
    assert_eq!(state(&b), BreakerState::Open, "6 of 12 is 50%");
    let snapshot = b.snapshot();
    assert!((snapshot.failure_rate - 0.5).abs() < 1e-9);
    assert_eq!(snapshot.calls_in_window, 12);
    let rejected = b.permit().unwrap_err();
    assert_eq!(rejected.state, BreakerState::Open);
    assert_eq!(rejected.retry_after, Some(Duration::from_secs(5)));
    assert_eq!(b.snapshot().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn never_opens_below_the_minimum_number_of_calls() {
    let b = breaker();
    record(&b, true, 9);
    assert_eq!(state(&b), BreakerState::Closed, "9 failures, but the minimum is 10 calls");
    assert!((b.snapshot().failure_rate - 1.0).abs() < 1e-9);
    record(&b, true, 1);
    assert_eq!(state(&b), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn only_the_last_window_counts() {
    let b = breaker();
    record(&b, true, 9);
    record(&b, false, 20);
    assert_eq!(b.snapshot().calls_in_window, 20);
    assert_eq!(b.snapshot().failure_rate, 0.0, "the failures slid out of the window");
    record(&b, true, 9);
    assert_eq!(state(&b), BreakerState::Closed, "9 of 20");
    record(&b, true, 1);
    assert_eq!(state(&b), BreakerState::Open, "10 of 20");
}

async fn slow_success(b: &Breaker, took: Duration) {
    let permit = b.permit().unwrap();
    advance(took).await;
    permit.record(false);
}

#[tokio::test(start_paused = true)]
async fn opens_on_slow_calls_even_when_they_succeed() {
    let b = Breaker::new(BreakerConfig { window_size: 10, ..small() }).unwrap();
    let mut transitions = b.transitions();
    record(&b, false, 2);
    slow_success(&b, Duration::from_millis(1_000)).await; // exactly the threshold is not slow
    for _ in 0..7 {
        slow_success(&b, Duration::from_millis(1_500)).await;
    }
    assert_eq!(state(&b), BreakerState::Closed, "7 of 10 slow is below 80%");
    assert!((b.snapshot().slow_call_rate - 0.7).abs() < 1e-9);
    assert_eq!(b.snapshot().failure_rate, 0.0);
    slow_success(&b, Duration::from_millis(1_001)).await; // a fast call slides out: 8 of 10
    assert_eq!(state(&b), BreakerState::Open);
    let opened = transitions.recv().await.unwrap();
    assert!(
        matches!(opened.reason, TransitionReason::Tripped(TripReason::SlowCallRate { calls: 10, .. })),
        "{:?}",
        opened.reason
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_configured_probes_under_concurrency() {
    let b = breaker();
    record(&b, true, 10);
    assert_eq!(state(&b), BreakerState::Open);
    advance(Duration::from_secs(5)).await;

    // Sixteen threads race for permits at the same paused instant.
    let handle = tokio::runtime::Handle::current();
    let permits: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (b, handle) = (b.clone(), handle.clone());
                scope.spawn(move || {
                    let _runtime = handle.enter();
                    b.permit().ok()
                })
            })
            .collect();
        threads.into_iter().filter_map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(permits.len(), 3, "exactly three probes");
    assert!(permits.iter().all(|p| p.is_probe()));
    assert_eq!(state(&b), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 3);

    let mut permits = permits.into_iter();
    permits.next().unwrap().record(false);
    permits.next().unwrap().record(false);
    assert_eq!(state(&b), BreakerState::HalfOpen, "two of three probes succeeded; one still out");
    assert!(b.permit().is_err(), "no fourth probe while one is in flight");
    permits.next().unwrap().record(false);
    assert_eq!(state(&b), BreakerState::Closed);
    assert_eq!(b.snapshot().calls_in_window, 0, "closing starts a fresh window");
}

#[tokio::test(start_paused = true)]
async fn each_failed_probe_reopens_for_longer_up_to_the_cap() {
    let b = breaker();
    let mut transitions = b.transitions();
    record(&b, true, 10);
    let mut expected_open = Vec::new();
    for expected in [5_000, 10_000, 20_000, 40_000, 60_000, 60_000] {
        let until = b.snapshot().open_until_instant.unwrap();
        assert_eq!(until - tokio::time::Instant::now(), Duration::from_millis(expected));
        advance(Duration::from_millis(expected - 1)).await;
        assert!(b.permit().is_err(), "still open 1 ms before the end of {expected} ms");
        advance(Duration::from_millis(1)).await;
        // Two of three probes failing is a 67 % failure rate: open again, for longer.
        b.permit().expect("a probe once the open period is over").record(true);
        assert_eq!(state(&b), BreakerState::HalfOpen, "one failed probe of three is 33 %, under 50 %");
        b.permit().expect("a second probe").record(true);
        assert_eq!(state(&b), BreakerState::Open);
        expected_open.push(expected);
    }
    assert_eq!(b.snapshot().trips, 7);

    // Read back the stream: open, then (half-open, open) per failed probe, with growing periods.
    let mut open_periods = Vec::new();
    while let Ok(t) = transitions.try_recv() {
        if t.to == BreakerState::Open {
            open_periods.push(t.open_for.unwrap().as_millis() as u64);
        }
    }
    assert_eq!(open_periods, [5_000, 10_000, 20_000, 40_000, 60_000, 60_000, 60_000]);

    // Recovery resets the growth.
    advance(Duration::from_secs(60)).await;
    record(&b, false, 3);
    assert_eq!(state(&b), BreakerState::Closed);
    record(&b, true, 10);
    let until = b.snapshot().open_until_instant.unwrap();
    assert_eq!(until - tokio::time::Instant::now(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn slow_probes_count_as_failed_probes() {
    let b = breaker();
    record(&b, true, 10);
    advance(Duration::from_secs(5)).await;
    slow_success(&b, Duration::from_secs(2)).await;
    slow_success(&b, Duration::from_secs(2)).await;
    assert_eq!(state(&b), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn one_failed_probe_of_three_still_closes_a_mostly_healthy_service() {
    let b = breaker();
    let mut transitions = b.transitions();
    record(&b, true, 10);
    advance(Duration::from_secs(5)).await;
    b.permit().unwrap().record(false);
    b.permit().unwrap().record(true);
    assert_eq!(state(&b), BreakerState::HalfOpen);
    b.permit().unwrap().record(false);
    assert_eq!(state(&b), BreakerState::Closed);
    let reasons: Vec<TransitionReason> = std::iter::from_fn(|| transitions.try_recv().ok()).map(|t| t.reason).collect();
    assert_eq!(reasons.last(), Some(&TransitionReason::ProbesSucceeded { succeeded: 2, probes: 3 }));
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_frees_its_slot_without_judging() {
    let b = breaker();
    record(&b, true, 10);
    advance(Duration::from_secs(5)).await;
    let probes: Vec<_> = (0..3).map(|_| b.permit().unwrap()).collect();
    assert!(b.permit().is_err());
    drop(probes); // cancelled futures: no result
    assert_eq!(state(&b), BreakerState::HalfOpen, "an abandoned call is not a failure");
    assert_eq!(b.snapshot().probes_in_flight, 0);
    record(&b, false, 3);
    assert_eq!(state(&b), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_call_from_before_a_transition_does_not_judge_the_new_state() {
    let b = breaker();
    let straggler = b.permit().unwrap();
    record(&b, true, 10);
    assert_eq!(state(&b), BreakerState::Open);
    straggler.record(false);
    assert_eq!(state(&b), BreakerState::Open);
    assert_eq!(b.snapshot().calls_in_window, 10);
}

#[tokio::test(start_paused = true)]
async fn operators_can_force_open_force_closed_and_return_to_automatic() {
    let b = breaker();
    let mut transitions = b.transitions();

    b.set_mode(Mode::ForcedOpen);
    assert_eq!(state(&b), BreakerState::ForcedOpen);
    assert_eq!(b.permit().unwrap_err().state, BreakerState::ForcedOpen);

    b.set_mode(Mode::ForcedClosed);
    record(&b, true, 20);
    assert_eq!(state(&b), BreakerState::ForcedClosed, "failures never trip a forced-closed breaker");
    assert!((b.snapshot().failure_rate - 1.0).abs() < 1e-9, "but they are still measured");

    b.set_mode(Mode::Auto);
    assert_eq!(state(&b), BreakerState::Closed);
    assert_eq!(b.snapshot().calls_in_window, 0);
    record(&b, true, 10);
    assert_eq!(state(&b), BreakerState::Open, "automatic again");

    let seen: Vec<_> = std::iter::from_fn(|| transitions.try_recv().ok()).map(|t| (t.from, t.to)).collect();
    assert_eq!(
        seen,
        [
            (BreakerState::Closed, BreakerState::ForcedOpen),
            (BreakerState::ForcedOpen, BreakerState::ForcedClosed),
            (BreakerState::ForcedClosed, BreakerState::Closed),
            (BreakerState::Closed, BreakerState::Open),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_watch_always_holds_the_current_snapshot() {
    let b = breaker();
    let mut watch = b.watch();
    assert_eq!(watch.borrow_and_update().state, BreakerState::Closed);
    record(&b, true, 10);
    assert!(watch.has_changed().unwrap());
    let snapshot = watch.borrow_and_update().clone();
    assert_eq!(snapshot.state, BreakerState::Open);
    assert!(snapshot.opened_at.is_some());
    let open_for = snapshot.open_until.unwrap().duration_since(snapshot.opened_at.unwrap()).unwrap();
    assert_eq!(open_for, Duration::from_secs(5));
}

#[test]
fn refuses_invalid_configurations() {
    let bad = [
        BreakerConfig { window_size: 0, ..BreakerConfig::default() },
        BreakerConfig { minimum_calls: 201, ..BreakerConfig::default() },
        BreakerConfig { failure_rate_threshold: 0.0, ..BreakerConfig::default() },
        BreakerConfig { slow_call_rate_threshold: 1.5, ..BreakerConfig::default() },
        BreakerConfig { open_duration: Duration::ZERO, ..BreakerConfig::default() },
        BreakerConfig { max_open_duration: Duration::from_secs(1), ..BreakerConfig::default() },
        BreakerConfig { half_open_probes: 0, ..BreakerConfig::default() },
        BreakerConfig { open_duration_multiplier: f64::NAN, ..BreakerConfig::default() },
    ];
    for config in bad {
        assert!(Breaker::new(config.clone()).is_err(), "{config:?}");
    }
}

/// The defaults hold a bank that fails steadily below the threshold: 10,000 calls at 30 %
/// failures never open the breaker, while at 60 % it opens within its first window.
#[tokio::test(start_paused = true)]
async fn the_defaults_ride_out_noise_below_the_threshold_and_trip_promptly_above_it() {
    for seed in 0..5 {
        let b = Breaker::new(BreakerConfig::default()).unwrap();
        let mut rng = fastrand::Rng::with_seed(seed);
        for call in 0..10_000 {
            let permit = b.permit().unwrap_or_else(|_| panic!("seed {seed}: opened at call {call} at 30 %"));
            permit.record(rng.f64() < 0.3);
            advance(Duration::from_millis(10)).await;
        }
        assert_eq!(state(&b), BreakerState::Closed, "seed {seed}");
        assert_eq!(b.snapshot().rejected, 0);

        let b = Breaker::new(BreakerConfig::default()).unwrap();
        let mut opened_after = None;
        for call in 1..=1_000 {
            let Ok(permit) = b.permit() else { break };
            permit.record(rng.f64() < 0.6);
            if state(&b) == BreakerState::Open {
                opened_after = Some(call);
                break;
            }
            advance(Duration::from_millis(10)).await;
        }
        let opened_after = opened_after.unwrap_or_else(|| panic!("seed {seed}: never opened at 60 %"));
        assert!(opened_after <= 250, "seed {seed}: opened only after {opened_after} calls at 60 %");
    }
}

//! The guard: retries, timing bounds, deadline, `Retry-After`, budget, declines, what the caller
//! learns, and how the breaker and the concurrency limit take part. All on tokio's paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::{
    BreakerConfig, BreakerState, BudgetConfig, CallResult, Guard, GuardConfig, Outcome, RetryConfig, StopReason,
    Verdict,
};
use tokio::time::Instant;

/// A breaker that never trips and a budget that never refuses, to test retries alone.
fn lenient(retry: RetryConfig) -> GuardConfig {
    GuardConfig {
        retry,
        breaker: BreakerConfig { window_size: 10_000, minimum_calls: 10_000, ..BreakerConfig::default() },
        budget: BudgetConfig { min_retries_per_sec: 100_000, ..BudgetConfig::default() },
        ..GuardConfig::default()
    }
}

/// What a fake bank answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Approved,
    Declined,
    Unavailable,
    ServerError,
    Lost,
    Throttled(Duration),
    Hang,
}

fn classify(answer: &Answer) -> Verdict {
    match answer {
        Answer::Approved => Verdict::success(),
        Answer::Declined => Verdict::definitive(),
        Answer::Unavailable => Verdict::not_processed(),
        Answer::ServerError => Verdict::ambiguous(),
        Answer::Lost => Verdict::lost(),
        Answer::Throttled(after) => Verdict::not_processed().with_retry_after(Some(*after)),
        Answer::Hang => unreachable!("a hang never answers"),
    }
}

async fn answer(answer: Answer) -> Answer {
    if answer == Answer::Hang {
        std::future::pending::<()>().await;
    }
    answer
}

#[tokio::test(start_paused = true)]
async fn retries_wait_within_the_full_jitter_bounds() {
    let guard = Guard::new(lenient(RetryConfig { max_attempts: 4, ..RetryConfig::default() })).unwrap();
    let ceilings = [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)];
    let mut gaps = vec![Vec::new(); 3];
    for _ in 0..200 {
        let mut starts = Vec::new();
        let report = guard
            .call(
                |_| {
                    starts.push(Instant::now());
                    answer(Answer::Unavailable)
                },
                classify,
            )
            .await;
        assert_eq!(report.attempts, 4);
        assert!(matches!(report.result, CallResult::Failed { stop: StopReason::AttemptsExhausted, .. }));
        assert!(!report.may_have_acted, "every attempt was surely not processed");
        for (i, pair) in starts.windows(2).enumerate() {
            gaps[i].push(pair[1] - pair[0]);
        }
    }
    for (i, (gaps, ceiling)) in gaps.iter().zip(ceilings).enumerate() {
        assert!(gaps.iter().all(|g| *g <= ceiling), "retry {}: a wait exceeded {ceiling:?}", i + 1);
        // Full jitter spreads waits over the whole range, not just near the ceiling.
        assert!(gaps.iter().any(|g| *g < ceiling / 4), "retry {}: no short waits", i + 1);
        assert!(gaps.iter().any(|g| *g > ceiling * 3 / 4), "retry {}: no long waits", i + 1);
    }
    assert_eq!(guard.stats().retries, 600);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_attempts_and_waits() {
    let retry = RetryConfig {
        max_attempts: 10,
        attempt_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(100),
        ..RetryConfig::default()
    };
    let guard = Guard::new(lenient(retry)).unwrap();
    let mut timeouts = Vec::new();
    let report = guard
        .call(
            |info| {
                timeouts.push(info.timeout);
                answer(Answer::Hang)
            },
            classify,
        )
        .await;
    assert!(report.elapsed <= Duration::from_secs(5), "{:?}", report.elapsed);
    assert_eq!(report.attempts, 3);
    assert_eq!(timeouts[..2], [Duration::from_secs(2), Duration::from_secs(2)]);
    assert!(timeouts[2] < Duration::from_secs(1), "the last attempt only gets what is left: {:?}", timeouts[2]);
    assert!(report.may_have_acted, "a timed-out attempt may have been processed");
    match report.result {
        CallResult::Failed { last: None, last_outcome: Outcome::Ambiguous, stop } => {
            assert!(matches!(stop, StopReason::DeadlineExceeded | StopReason::AttemptsExhausted), "{stop:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(guard.stats().attempt_timeouts, 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_within_the_deadline() {
    let guard = Guard::new(lenient(RetryConfig::default())).unwrap();
    let mut starts = Vec::new();
    let report = guard
        .call(
            |info| {
                starts.push(Instant::now());
                answer(if info.number == 1 {
                    Answer::Throttled(Duration::from_millis(1_500))
                } else {
                    Answer::Approved
                })
            },
            classify,
        )
        .await;
    assert!(matches!(report.result, CallResult::Success(Answer::Approved)));
    assert_eq!(starts[1] - starts[0], Duration::from_millis(1_500), "waited exactly what the bank asked");

    // Asked to come back after the deadline: stop at once rather than wait in vain.
    let started = Instant::now();
    let report = guard.call(|_| answer(Answer::Throttled(Duration::from_secs(30))), classify).await;
    assert_eq!(report.attempts, 1);
    assert!(matches!(report.result, CallResult::Failed { stop: StopReason::DeadlineExceeded, .. }));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_caps_retries_to_a_share_of_calls() {
    let mut config = lenient(RetryConfig::default());
    config.budget = BudgetConfig { retry_ratio: 0.0, min_retries_per_sec: 0, ..BudgetConfig::default() };
    let guard = Guard::new(config.clone()).unwrap();
    let report = guard.call(|_| answer(Answer::Unavailable), classify).await;
    assert_eq!(report.attempts, 1);
    assert!(matches!(report.result, CallResult::Failed { stop: StopReason::BudgetExhausted, .. }));
    assert_eq!(guard.stats().budget_refusals, 1);

    config.budget = BudgetConfig { retry_ratio: 0.5, min_retries_per_sec: 0, ..BudgetConfig::default() };
    let guard = Guard::new(config).unwrap();
    for _ in 0..20 {
        guard.call(|_| answer(Answer::Unavailable), classify).await;
    }
    let stats = guard.stats();
    assert!(stats.retries <= 10, "at most half as many retries as calls: {stats:?}");
    assert!(stats.retries >= 5, "but the budget does allow some: {stats:?}");
    assert!(stats.budget_refusals > 0);
}

#[tokio::test(start_paused = true)]
async fn declines_are_never_retried_nor_counted_as_failures() {
    let breaker = BreakerConfig { window_size: 20, minimum_calls: 10, ..BreakerConfig::default() };
    let guard = Guard::new(GuardConfig { breaker, ..GuardConfig::default() }).unwrap();
    for _ in 0..30 {
        let report = guard.call(|_| answer(Answer::Declined), classify).await;
        assert_eq!(report.attempts, 1);
        assert!(matches!(report.result, CallResult::Definitive(Answer::Declined)));
        assert!(report.may_have_acted);
    }
    let snapshot = guard.breaker().snapshot();
    assert_eq!(snapshot.state, BreakerState::Closed);
    assert_eq!(snapshot.failure_rate, 0.0);
    assert_eq!(snapshot.calls_in_window, 20);
    assert_eq!(guard.stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn the_caller_learns_whether_the_service_may_have_acted() {
    let guard = Guard::new(lenient(RetryConfig::default())).unwrap();
    let report =
        guard.call(|info| answer(if info.number == 1 { Answer::Lost } else { Answer::Unavailable }), classify).await;
    assert_eq!(report.attempts, 3);
    assert!(report.may_have_acted, "the first attempt was ambiguous");
    assert!(matches!(report.result, CallResult::Failed { last_outcome: Outcome::NotProcessed, .. }));

    let report =
        guard.call(|info| answer(if info.number < 3 { Answer::Lost } else { Answer::Approved }), classify).await;
    assert!(matches!(report.result, CallResult::Success(Answer::Approved)));
    assert_eq!(report.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_before_the_service_is_touched() {
    let config = GuardConfig {
        breaker: BreakerConfig { minimum_calls: 1, ..BreakerConfig::default() },
        ..GuardConfig::default()
    };
    let guard = Guard::new(config).unwrap();
    let calls = AtomicU32::new(0);
    let op = |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        answer(Answer::Unavailable)
    };

    // The first failure opens the breaker, so the retry is refused: the call ends with what it saw.
    let report = guard.call(op, classify).await;
    assert_eq!(report.attempts, 1);
    match report.result {
        CallResult::Failed { stop: StopReason::CircuitOpen(rejected), .. } => {
            assert_eq!(rejected.state, BreakerState::Open);
        }
        other => panic!("{other:?}"),
    }

    let report = guard.call(op, classify).await;
    assert_eq!(report.attempts, 0);
    assert!(!report.may_have_acted);
    match report.result {
        CallResult::CircuitOpen(rejected) => assert!(rejected.retry_after.unwrap() <= Duration::from_secs(5)),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the refused call never reached the service");
    assert_eq!(guard.stats().rejected_by_breaker, 2);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limit_fails_fast() {
    let config = GuardConfig { max_concurrent_calls: 2, ..lenient(RetryConfig::default()) };
    let guard = Arc::new(Guard::new(config).unwrap());
    let release = Arc::new(tokio::sync::Notify::new());
    let mut busy = Vec::new();
    for _ in 0..2 {
        let (guard, release) = (Arc::clone(&guard), Arc::clone(&release));
        busy.push(tokio::spawn(async move {
            guard
                .call(
                    |_| {
                        let release = Arc::clone(&release);
                        async move {
                            release.notified().await;
                            Answer::Approved
                        }
                    },
                    classify,
                )
                .await
        }));
    }
    while guard.bulkhead().in_flight() < 2 {
        tokio::task::yield_now().await;
    }
    let touched = AtomicU32::new(0);
    let report = guard
        .call(
            |_| {
                touched.fetch_add(1, Ordering::SeqCst);
                answer(Answer::Approved)
            },
            classify,
        )
        .await;
    assert!(matches!(report.result, CallResult::Overloaded(_)));
    assert_eq!(touched.load(Ordering::SeqCst), 0);
    release.notify_waiters();
    for call in busy {
        assert!(matches!(call.await.unwrap().result, CallResult::Success(_)));
    }
    assert_eq!(guard.bulkhead().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_frees_its_probe_slot_and_its_concurrency_slot() {
    let config = GuardConfig {
        breaker: BreakerConfig { minimum_calls: 1, half_open_probes: 3, ..BreakerConfig::default() },
        ..GuardConfig::default()
    };
    let guard = Guard::new(config).unwrap();
    guard.call(|_| answer(Answer::Unavailable), classify).await;
    assert_eq!(guard.breaker().snapshot().state, BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;

    // A probe call abandoned by an outer timeout.
    let abandoned =
        tokio::time::timeout(Duration::from_millis(10), guard.call(|_| answer(Answer::Hang), classify)).await;
    assert!(abandoned.is_err());
    assert_eq!(guard.breaker().snapshot().probes_in_flight, 0);
    assert_eq!(guard.bulkhead().in_flight(), 0);
    for _ in 0..3 {
        assert!(matches!(guard.call(|_| answer(Answer::Approved), classify).await.result, CallResult::Success(_)));
    }
    assert_eq!(guard.breaker().snapshot().state, BreakerState::Closed);
}

#[test]
fn refuses_invalid_retry_settings() {
    let bad = [
        RetryConfig { max_attempts: 0, ..RetryConfig::default() },
        RetryConfig { attempt_timeout: Duration::ZERO, ..RetryConfig::default() },
        RetryConfig { deadline: Duration::from_secs(1), ..RetryConfig::default() },
        RetryConfig { backoff_multiplier: 0.5, ..RetryConfig::default() },
        RetryConfig { backoff_cap: Duration::from_millis(1), ..RetryConfig::default() },
    ];
    for retry in bad {
        assert!(Guard::new(GuardConfig { retry: retry.clone(), ..GuardConfig::default() }).is_err(), "{retry:?}");
    }
    assert!(Guard::new(GuardConfig { max_concurrent_calls: 0, ..GuardConfig::default() }).is_err());
}

/// The caller learns how many attempts never got a whole answer: timed out, or lost on the way.
/// An answered 500 may have acted too, but it is over.
#[tokio::test(start_paused = true)]
async fn the_report_counts_the_attempts_that_were_never_answered() {
    let guard = Guard::new(lenient(RetryConfig { max_attempts: 4, ..RetryConfig::default() })).unwrap();
    let script = [Answer::Hang, Answer::Lost, Answer::ServerError, Answer::Unavailable];
    let report = guard.call(|info| answer(script[info.number as usize - 1]), classify).await;
    assert_eq!(report.attempts, 4);
    assert_eq!(report.unanswered, 2, "the hang and the lost answer");
    assert!(report.may_have_acted);
    let answered = guard.call(|_| answer(Answer::ServerError), classify).await;
    assert_eq!((answered.attempts, answered.unanswered), (4, 0));
}

/// A caller that asks the breaker before its other work (the gateway, before it writes anything)
/// asks it once: the call's first attempt goes under that admission, and a refusal costs nothing.
#[tokio::test(start_paused = true)]
async fn an_admitted_call_asks_the_breaker_once() {
    let config = GuardConfig {
        breaker: BreakerConfig { minimum_calls: 1, half_open_probes: 1, ..BreakerConfig::default() },
        ..GuardConfig::default()
    };
    let guard = Guard::new(config).unwrap();
    guard.call(|_| answer(Answer::Unavailable), classify).await;
    assert_eq!(guard.breaker().snapshot().state, BreakerState::Open);
    assert!(guard.admit().is_err(), "open: refused before any work");
    assert_eq!(guard.stats().rejected_by_breaker, 2, "the retry above and this one");

    tokio::time::advance(Duration::from_secs(5)).await;
    // Half-open admits one probe: the admission takes it, and the call runs on it.
    let admission = guard.admit().unwrap();
    assert!(guard.admit().is_err(), "the only probe slot is taken");
    let report = guard.call_admitted(admission, |_| answer(Answer::Approved), classify).await;
    assert!(matches!(report.result, CallResult::Success(Answer::Approved)));
    assert_eq!(guard.breaker().snapshot().state, BreakerState::Closed);

    // An admission dropped unused frees its slot without judging the service.
    guard.breaker().set_mode(resilience::Mode::Auto);
    drop(guard.admit().unwrap());
    assert_eq!(guard.breaker().snapshot().state, BreakerState::Closed);
}

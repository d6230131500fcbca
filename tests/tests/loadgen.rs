//! The load generator's pacing, bounds and latency accounting, on tokio's paused clock with
//! sessions that take a known time per call: every figure is exact.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::loadgen::{self, Bound, Outcome, Pace, Session};
use tokio::time::Instant;

/// When each call started, by call number.
type Starts = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Takes `took` per call and notes when each call started.
struct Fixed {
    took: Duration,
    started: Starts,
}

impl Session for Fixed {
    async fn call(&mut self, seq: u64) -> Outcome {
        self.started.lock().unwrap().push((seq, Instant::now()));
        tokio::time::sleep(self.took).await;
        if seq.is_multiple_of(4) { Outcome::Status(402) } else { Outcome::Status(201) }
    }
}

fn sessions(workers: usize, took: Duration) -> (Vec<Fixed>, Starts) {
    let started = Arc::new(Mutex::new(Vec::new()));
    let sessions = (0..workers).map(|_| Fixed { took, started: Arc::clone(&started) }).collect();
    (sessions, started)
}

#[tokio::test(start_paused = true)]
async fn open_loop_sends_each_call_when_it_is_due() {
    let (workers, started) = sessions(8, Duration::from_millis(5));
    let begin = Instant::now();
    let (report, _) = loadgen::run(Pace::Open { rate: 100.0 }, Bound::Count(50), workers).await.unwrap();
    assert_eq!(report.completed, 50);
    let mut started = started.lock().unwrap().clone();
    started.sort();
    assert_eq!(started.len(), 50);
    for (seq, at) in started {
        assert_eq!(at - begin, Duration::from_millis(10 * seq), "call {seq} was sent when it was due");
    }
    // Nobody waited for a worker: every call took its 5 ms.
    let spread = report.latency_us.max() - report.latency_us.min();
    assert!(spread <= 10, "latencies spread by {spread} µs (the histogram keeps 3 significant digits)");
    assert!((report.percentile_ms(0.99) - 5.0).abs() < 0.01, "{}", report.percentile_ms(0.99));
    assert_eq!(report.count(Outcome::Status(402)), 13);
    assert_eq!(report.count(Outcome::Status(201)), 37);
}

#[tokio::test(start_paused = true)]
async fn open_loop_latency_counts_the_wait_for_a_free_worker() {
    // One worker, one call due every 100 ms, each taking 1 s: call n waits n × 900 ms first.
    let (workers, _) = sessions(1, Duration::from_secs(1));
    let (report, _) = loadgen::run(Pace::Open { rate: 10.0 }, Bound::Count(5), workers).await.unwrap();
    assert_eq!(report.completed, 5);
    let max_ms = report.latency_us.max() as f64 / 1_000.0;
    assert!((max_ms - 4_600.0).abs() < 5.0, "the last call waited 3.6 s and took 1 s, not {max_ms} ms");
    let min_ms = report.latency_us.min() as f64 / 1_000.0;
    assert!((min_ms - 1_000.0).abs() < 1.0, "{min_ms}");
}

#[tokio::test(start_paused = true)]
async fn closed_loop_measures_only_after_the_warm_up_and_stops_on_time() {
    // Two workers, 10 ms per call: 200 calls a second.
    let (workers, started) = sessions(2, Duration::from_millis(10));
    let bound = Bound::Duration { warmup: Duration::from_secs(1), measured: Duration::from_secs(2) };
    let begin = Instant::now();
    let (report, _) = loadgen::run(Pace::Closed, bound, workers).await.unwrap();
    assert_eq!(report.completed, 400, "{report:?}");
    assert_eq!(report.measured, Duration::from_secs(2));
    assert!((report.rps() - 200.0).abs() < 0.01);
    let started = started.lock().unwrap();
    assert_eq!(started.len(), 600, "200 warm-up calls, then 400 measured");
    assert!(started.iter().all(|(_, at)| *at - begin < Duration::from_secs(3)), "no call starts after the end");
    let mut seqs: Vec<u64> = started.iter().map(|(seq, _)| *seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 600, "every call number is used once");
}

#[tokio::test(start_paused = true)]
async fn a_count_bound_makes_exactly_that_many_calls_and_hands_the_sessions_back() {
    let (workers, started) = sessions(3, Duration::from_millis(7));
    let (report, sessions) = loadgen::run(Pace::Closed, Bound::Count(100), workers).await.unwrap();
    assert_eq!(report.completed, 100);
    assert_eq!(sessions.len(), 3);
    assert_eq!(started.lock().unwrap().len(), 100);
    assert!(loadgen::run(Pace::Open { rate: 0.0 }, Bound::Count(1), sessions).await.is_err(), "a zero rate");
}

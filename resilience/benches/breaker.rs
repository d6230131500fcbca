//! The overhead of protecting a call: one breaker permit plus its record, uncontended and with two
//! threads contending for the same breaker; and a whole `Guard::call` around a ready future.
//! Run with `./run.sh bench resilience` (or `cargo bench -p resilience`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use resilience::{Breaker, BreakerConfig, Guard, GuardConfig, Verdict};

fn breaker_overhead(c: &mut Criterion) {
    let breaker = Breaker::new(BreakerConfig::default()).unwrap();
    c.bench_function("breaker permit+record, uncontended", |b| {
        b.iter(|| breaker.permit().unwrap().record(black_box(false)))
    });

    c.bench_function("breaker permit+record, 2 threads contending", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..iterations {
                            breaker.permit().unwrap().record(black_box(false));
                        }
                    });
                }
            });
            // Wall time per call as each thread sees it.
            started.elapsed()
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let guard = Guard::new(GuardConfig::default()).unwrap();
    c.bench_function("guard call around a ready future", |b| {
        b.iter(|| runtime.block_on(guard.call(|_| std::future::ready(black_box(1u32)), |_| Verdict::success())))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = breaker_overhead
}
criterion_main!(benches);

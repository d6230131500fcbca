//! What runs in the background of a gateway, stopped together when the server stops:
//!
//! - the **reconciler** settles every `processing` payment by status inquiry: payments answered
//!   202 because the bank's outcome was unknown, and payments whose request died (a crash) once
//!   their lease has run out. Settling one also updates the answer stored under its key, so later
//!   replays return the settled outcome. Several instances may run it against one Redis: an
//!   inquiry only reads, and every write it leads to is the same whoever makes it;
//! - the **backlog writer** writes the outcomes the store could not take (it was down right after
//!   the bank acted) as soon as it answers again;
//! - the **stats ticker** publishes a `stats` event every second;
//! - two **forwarders** turn breaker transitions and log records into stream events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::App;
use crate::events::{BreakerEvent, BreakerView};

/// Aborts the tasks when dropped.
#[derive(Debug)]
pub struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

pub fn spawn_all(app: Arc<App>) -> Background {
    Background(vec![
        tokio::spawn(reconciler(Arc::clone(&app))),
        tokio::spawn(backlog_writer(Arc::clone(&app))),
        tokio::spawn(stats_ticker(Arc::clone(&app))),
        tokio::spawn(breaker_forwarder(Arc::clone(&app))),
        tokio::spawn(log_forwarder(app)),
    ])
}

async fn reconciler(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.gateway.settings.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = app.gateway.reconcile_due().await {
            warn!(%error, "reconciler pass failed; will retry");
        }
    }
}

/// Every quarter second while outcomes wait; they are written in the order they were kept.
async fn backlog_writer(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !app.gateway.backlog.is_empty() {
            app.gateway.write_backlog().await;
        }
    }
}

/// The `stats` event.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub at: chrono::DateTime<chrono::Utc>,
    /// Payment requests since start, by outcome.
    pub totals: BTreeMap<String, u64>,
    /// The same, per second over the last tick.
    pub rates: BTreeMap<String, f64>,
    /// Payment latency over the last minute, in ms.
    pub latency_ms: Latency,
    pub in_flight: u64,
    pub retries: u64,
    pub budget_refusals: u64,
    pub attempt_timeouts: u64,
    pub breaker: BreakerView,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

async fn stats_ticker(app: Arc<App>) {
    let mut previous: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let gateway = &app.gateway;
        let totals = gateway.metrics.payment_totals();
        let elapsed = last.elapsed().as_secs_f64().max(1e-3);
        last = tokio::time::Instant::now();
        let rates = totals
            .iter()
            .map(|(outcome, total)| {
                let before = previous.get(outcome).copied().unwrap_or(0);
                (outcome.clone(), (total - before.min(*total)) as f64 / elapsed)
            })
            .collect();
        previous = totals.clone();
        let [p50, p95, p99] = gateway.latency.percentiles();
        let guard = gateway.guard.stats();
        let stats = Stats {
            at: crate::events::now(),
            totals,
            rates,
            latency_ms: Latency { p50, p95, p99 },
            in_flight: gateway.in_flight.load(Ordering::Relaxed),
            retries: guard.retries,
            budget_refusals: guard.budget_refusals,
            attempt_timeouts: guard.attempt_timeouts,
            breaker: BreakerView::of(gateway.guard.breaker()),
        };
        gateway.events.publish("stats", &stats);
    }
}

async fn breaker_forwarder(app: Arc<App>) {
    let mut transitions = app.gateway.guard.breaker().transitions();
    loop {
        match transitions.recv().await {
            Ok(transition) => {
                let event = BreakerEvent::from(&transition);
                app.gateway.metrics.breaker_transitions.inc(format!("to=\"{}\"", event.to));
                app.gateway.events.publish("breaker", &event);
            }
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

async fn log_forwarder(app: Arc<App>) {
    let mut records = crate::telemetry::log_feed();
    loop {
        match records.recv().await {
            Ok(record) => app.gateway.events.publish("log", &*record),
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

//! What runs in the background of a gateway, stopped together when the server stops:
//!
//! - the **reconciler** settles every `processing` payment by status inquiry, and every pending
//!   refund (see `gateway::reconcile`);
//! - the **backlog writer** writes the outcomes the store could not take (it was down right after
//!   the bank acted) as soon as it answers again;
//! - the **stats ticker** publishes a `stats` event every second;
//! - two **forwarders** turn breaker transitions and log records into stream events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::gateway::Gateway;

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

pub fn spawn_all(gateway: Arc<Gateway>) -> Background {
    Background(vec![
        tokio::spawn(reconciler(Arc::clone(&gateway))),
        tokio::spawn(backlog_writer(Arc::clone(&gateway))),
        tokio::spawn(stats_ticker(Arc::clone(&gateway))),
        tokio::spawn(breaker_forwarder(Arc::clone(&gateway))),
        tokio::spawn(log_forwarder(gateway)),
    ])
}

async fn reconciler(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(gateway.reconcile_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = gateway.reconcile_due().await {
            warn!(%error, "reconciler pass failed; will retry");
        }
    }
}

/// Every quarter second while outcomes wait; they are written in the order they were kept.
async fn backlog_writer(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if gateway.has_backlog() {
            gateway.write_backlog().await;
        }
    }
}

async fn stats_ticker(gateway: Arc<Gateway>) {
    let mut previous: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let stats = gateway.stats(&previous, last.elapsed());
        last = tokio::time::Instant::now();
        previous = stats.totals.clone();
        gateway.publish("stats", &stats);
    }
}

async fn breaker_forwarder(gateway: Arc<Gateway>) {
    let mut transitions = gateway.breaker_transitions();
    loop {
        match transitions.recv().await {
            Ok(transition) => gateway.breaker_moved(&transition),
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

async fn log_forwarder(gateway: Arc<Gateway>) {
    let mut records = crate::telemetry::log_feed();
    loop {
        match records.recv().await {
            Ok(record) => gateway.publish("log", &*record),
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

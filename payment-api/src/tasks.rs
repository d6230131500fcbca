//! What runs in the background of a gateway, stopped together when the server stops:
//!
//! - the **reconciler** settles every `processing` payment by status inquiry, and every pending
//!   refund (see `gateway::reconcile`);
//! - the **backlog writer** writes the outcomes the store could not take (it was down right after
//!   the bank acted) as soon as it answers again;
//! - the **dispatcher** fans events out to webhook deliveries and sends them (see
//!   `webhook::dispatch`), and the **pruner** forgets events past their retention;
//! - the **stats ticker** publishes a `stats` event every second, and `webhooks` (delivery health
//!   per endpoint) when there are endpoints;
//! - three **forwarders** turn the event log's payment events, breaker transitions and log
//!   records into stream events.

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
        tokio::spawn(fan_out(Arc::clone(&gateway))),
        tokio::spawn(sender(Arc::clone(&gateway))),
        tokio::spawn(pruner(Arc::clone(&gateway))),
        tokio::spawn(event_forwarder(Arc::clone(&gateway))),
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
        let health = gateway.dispatcher().health();
        if !health.is_empty() {
            gateway.publish("webhooks", &health);
        }
    }
}

/// How long the dispatcher's passes wait when they found nothing to do.
const IDLE: Duration = Duration::from_millis(100);

/// Fans events out to their deliveries as they are written.
async fn fan_out(gateway: Arc<Gateway>) {
    loop {
        match gateway.dispatcher().fan_out().await {
            Ok(0) => tokio::time::sleep(IDLE).await,
            Ok(_) => {}
            Err(error) => {
                warn!(%error, "webhook fan-out failed; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sends deliveries as they fall due.
async fn sender(gateway: Arc<Gateway>) {
    let dispatcher = Arc::clone(gateway.dispatcher());
    drop(gateway);
    loop {
        match dispatcher.send_due().await {
            Ok(0) => tokio::time::sleep(IDLE).await,
            Ok(_) => tokio::task::yield_now().await,
            Err(error) => {
                warn!(%error, "taking due webhook deliveries failed; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Once a minute, forgets events past their retention (Redis expires them itself).
async fn pruner(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = gateway.prune_events().await {
            warn!(%error, "pruning old events failed; will retry");
        }
    }
}

/// Streams the log's payment events as `payment` events, while anyone is watching: the stream
/// shows what the log (and so the webhooks) say, whichever instance wrote it.
async fn event_forwarder(gateway: Arc<Gateway>) {
    // From the log's end at start; while nobody watches, only the end is followed (one cheap
    // read a tick), and a watcher who arrives is shown everything from the tick before.
    let mut cursor = gateway.log_end().await.ok();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(from) = cursor.clone().filter(|_| gateway.has_subscribers()) else {
            match gateway.log_end().await {
                Ok(end) => cursor = Some(end),
                Err(error) => warn!(%error, "reading the event log's end failed; will retry"),
            }
            continue;
        };
        match gateway.log_after(&from, 512).await {
            Ok(entries) => {
                for entry in &entries {
                    gateway.announce(&entry.event);
                }
                if let Some(last) = entries.last() {
                    cursor = Some(last.cursor.clone());
                }
            }
            Err(error) => warn!(%error, "reading the event log for the stream failed; will retry"),
        }
    }
}
/// Every bank's breaker transitions, as `breaker` events naming the bank.
async fn breaker_forwarder(gateway: Arc<Gateway>) {
    let forwarders = gateway.breaker_transitions().into_iter().map(|(bank, mut transitions)| {
        let gateway = Arc::clone(&gateway);
        async move {
            loop {
                match transitions.recv().await {
                    Ok(transition) => gateway.breaker_moved(&bank, &transition),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });
    futures_util::future::join_all(forwarders).await;
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

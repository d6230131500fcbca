//! The reconciler: a background task that settles every `processing` payment by status inquiry.
//! Those are payments answered 202 because the bank's outcome was unknown, and payments whose
//! request died (a crash) once their lease has run out. Settling one also updates the answer
//! stored under its idempotency key, so later replays return the settled outcome.
//!
//! Several gateway instances may run it against one Redis at once: an inquiry only reads, and
//! every write it leads to is the same whoever makes it.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::warn;

use crate::App;

/// Stops the reconciler when dropped.
#[derive(Debug)]
pub struct Reconciler(JoinHandle<()>);

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(app: Arc<App>) -> Reconciler {
    Reconciler(tokio::spawn(async move {
        let interval = app.gateway.settings.reconcile_interval;
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = app.gateway.reconcile_due().await {
                warn!(%error, "reconciler pass failed; will retry");
            }
        }
    }))
}

//! Where orders and the inbox live: one redb file. An event changes an order in the same
//! transaction that records its id in the inbox, so an event is processed once, however often it
//! is delivered and whichever way (webhook or events API) it arrives.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::order::{Order, PaymentSeen};

const ORDERS: TableDefinition<&str, &str> = TableDefinition::new("orders");
/// event id → when it was processed (ms).
const INBOX: TableDefinition<&str, i64> = TableDefinition::new("inbox");
/// `watermark`: the creation time (ms) of the newest event processed.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
#[error("order store: {0}")]
pub struct StoreError(String);

fn err(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Seen before: nothing done.
    Duplicate,
    /// Not about an order of ours (recorded, so it is not looked at again).
    NotOurs,
    /// Recorded; the order as it is now.
    Applied(Box<Order>),
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(ORDERS).map_err(err)?;
        txn.open_table(INBOX).map_err(err)?;
        txn.open_table(META).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(err)?
    }

    /// Stores a new order, unless one with its id exists; returns the stored one.
    pub async fn create(&self, order: Order) -> Result<Order, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let stored = {
                let mut orders = txn.open_table(ORDERS).map_err(err)?;
                let existing = orders.get(order.id.as_str()).map_err(err)?.map(|raw| raw.value().to_owned());
                match existing {
                    Some(raw) => serde_json::from_str(&raw).map_err(err)?,
                    None => {
                        let json = serde_json::to_string(&order).map_err(err)?;
                        orders.insert(order.id.as_str(), json.as_str()).map_err(err)?;
                        order
                    }
                }
            };
            txn.commit().map_err(err)?;
            Ok(stored)
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let orders = txn.open_table(ORDERS).map_err(err)?;
            let raw = orders.get(id.as_str()).map_err(err)?;
            raw.map(|raw| serde_json::from_str(raw.value()).map_err(err)).transpose()
        })
        .await
    }

    pub async fn all(&self) -> Result<Vec<Order>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(err)?;
            let orders = txn.open_table(ORDERS).map_err(err)?;
            let mut all = Vec::new();
            for entry in orders.iter().map_err(err)? {
                all.push(serde_json::from_str(entry.map_err(err)?.1.value()).map_err(err)?);
            }
            Ok(all)
        })
        .await
    }

    /// Changes an order in one transaction; `change` returns false to write nothing.
    pub async fn modify(
        &self,
        id: &str,
        change: impl FnOnce(&mut Order) -> bool + Send + 'static,
    ) -> Result<Option<Order>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let changed = {
                let mut orders = txn.open_table(ORDERS).map_err(err)?;
                let raw = orders.get(id.as_str()).map_err(err)?.map(|raw| raw.value().to_owned());
                let Some(raw) = raw else { return Ok(None) };
                let mut order: Order = serde_json::from_str(&raw).map_err(err)?;
                if change(&mut order) {
                    let json = serde_json::to_string(&order).map_err(err)?;
                    orders.insert(id.as_str(), json.as_str()).map_err(err)?;
                }
                order
            };
            txn.commit().map_err(err)?;
            Ok(Some(changed))
        })
        .await
    }

    /// Records `event_id` in the inbox and applies what it says of the payment to its order, in
    /// one transaction.
    pub async fn process(
        &self,
        event_id: &str,
        created_at: DateTime<Utc>,
        order_id: Option<String>,
        seen: PaymentSeen,
    ) -> Result<Processed, StoreError> {
        let event_id = event_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let processed = {
                let mut inbox = txn.open_table(INBOX).map_err(err)?;
                if inbox.get(event_id.as_str()).map_err(err)?.is_some() {
                    return Ok(Processed::Duplicate);
                }
                let now = Utc::now();
                inbox.insert(event_id.as_str(), now.timestamp_millis()).map_err(err)?;
                let mut meta = txn.open_table(META).map_err(err)?;
                let watermark = meta.get("watermark").map_err(err)?.map_or(0, |v| v.value());
                meta.insert("watermark", watermark.max(created_at.timestamp_millis())).map_err(err)?;
                let mut orders = txn.open_table(ORDERS).map_err(err)?;
                let raw = match &order_id {
                    Some(id) => orders.get(id.as_str()).map_err(err)?.map(|raw| raw.value().to_owned()),
                    None => None,
                };
                match raw {
                    None => Processed::NotOurs,
                    Some(raw) => {
                        let mut order: Order = serde_json::from_str(&raw).map_err(err)?;
                        if order.observe(seen, now) {
                            let json = serde_json::to_string(&order).map_err(err)?;
                            orders.insert(order.id.as_str(), json.as_str()).map_err(err)?;
                        }
                        Processed::Applied(Box::new(order))
                    }
                }
            };
            txn.commit().map_err(err)?;
            Ok(processed)
        })
        .await
    }

    /// How many events the inbox holds.
    pub async fn inbox_len(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(err)?;
            txn.open_table(INBOX).map_err(err)?.len().map_err(err)
        })
        .await
    }

    /// Whether the inbox holds `event_id`.
    pub async fn seen(&self, event_id: &str) -> Result<bool, StoreError> {
        let event_id = event_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            Ok(txn.open_table(INBOX).map_err(err)?.get(event_id.as_str()).map_err(err)?.is_some())
        })
        .await
    }

    /// The creation time (ms) of the newest event processed.
    pub async fn watermark(&self) -> Result<i64, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(err)?;
            Ok(txn.open_table(META).map_err(err)?.get("watermark").map_err(err)?.map_or(0, |v| v.value()))
        })
        .await
    }
}

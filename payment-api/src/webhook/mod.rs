//! Webhooks: the delivery of events to the endpoints merchants subscribe.
//!
//! Every event is fanned out, once, from the store's outbox into one delivery per endpoint that
//! wants it (see [`dispatch`]); each delivery is then sent, signed the Standard Webhooks way,
//! until an endpoint answers 2xx or the retry schedule runs out. A delivery carries the event's id
//! as `webhook-id` on every attempt, so a receiver deduplicates by it. The endpoints and
//! deliveries themselves are data of the model (`model::webhook`), kept by the store.
//!
//! - [`dispatch`]: the background work (fan-out, sending, retries, breakers per endpoint);
//! - [`address`]: which URLs may be delivered to (`WEBHOOK_ALLOW_PRIVATE`).

pub mod address;
pub mod dispatch;

pub use crate::model::webhook::*;

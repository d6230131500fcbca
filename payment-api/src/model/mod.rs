//! The payment domain: what a client sends ([`request`]), what the gateway stores and shows
//! ([`payment`]), the changes a payment goes through ([`change`]), the events they produce
//! ([`event`]), and the webhook endpoints and deliveries that carry events out ([`webhook`]).

pub mod change;
pub mod event;
pub mod payment;
pub mod request;
pub mod webhook;

pub use change::{Change, ChargeOutcome, HoldClosed, Refusal};
pub use event::{EventType, StoredEvent, events_for};
pub use payment::{
    CancellationReason, CardSummary, HoldEnd, Payment, PaymentStatus, PendingKind, PendingOperation, PublicPayment,
    PublicRefund, Refund, RefundStatus,
};
pub use request::{Canonical, CardInput, CreatePayment, MAX_AMOUNT};

//! What the store keeps for events and webhooks, beside payments: the event log (written in the
//! same atomic step as the change each event describes), the outbox the dispatcher fans events
//! out from, webhook endpoints, and deliveries with their schedule.
//!
//! The rules the backends share are here: pagination of events ([`EventPager`]), and the
//! version rule of deliveries ([`Saved`]): a delivery is written only over the version it was
//! derived from, as payments are.

use std::ops::ControlFlow;

use crate::model::webhook::Delivery;
use crate::model::{EventType, StoredEvent};

/// Filters of `GET /v1/events`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kind: Option<EventType>,
    pub limit: usize,
    /// Events older than this one (any `evt_…` id: ids sort by time).
    pub starting_after: Option<String>,
}

/// One page of events, newest first.
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub has_more: bool,
}

/// Fills a page from a walk of a merchant's events, newest first.
#[derive(Debug)]
pub struct EventPager {
    limit: usize,
    page: EventPage,
}

impl EventPager {
    pub fn new(limit: usize) -> Self {
        Self { limit, page: EventPage::default() }
    }

    /// Takes the walk's next event; `Break` once the page is full and another has shown that
    /// more follow.
    pub fn offer(&mut self, event: StoredEvent) -> ControlFlow<()> {
        if self.page.events.len() == self.limit {
            self.page.has_more = true;
            return ControlFlow::Break(());
        }
        self.page.events.push(event);
        ControlFlow::Continue(())
    }

    pub fn finish(self) -> EventPage {
        self.page
    }
}

/// An event in the log, with its place there (a cursor to read on from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub cursor: String,
    pub event: StoredEvent,
}

/// What writing a delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    Written,
    /// It changed since it was read (a redelivery, or another worker): nothing was written; here
    /// it is now (`None`: gone, its event expired).
    Conflict(Option<Box<Delivery>>),
}

/// Whether `stored_version` lets `delivery` be written over it.
pub fn may_save(stored_version: Option<u64>, delivery: &Delivery) -> bool {
    stored_version.is_some_and(|v| v + 1 == delivery.version)
}

/// The delivery a worker takes: leased until `lease_until_ms`, so that no other worker takes it
/// meanwhile, and taken again by any worker once the lease ran out.
pub fn leased(delivery: &Delivery, lease_until_ms: i64) -> Delivery {
    Delivery { due_ms: Some(lease_until_ms), version: delivery.version + 1, ..delivery.clone() }
}

/// A log position as text that sorts as the number does.
pub fn seq_cursor(seq: u64) -> String {
    format!("{seq:020}")
}

/// Whether `id` is an event id as the gateway writes them: `evt_` and 32 lower-case hex digits
/// (the gateway's are UUID v7s, which sort as the events' times do).
pub fn is_event_id(id: &str) -> bool {
    StoredEvent::id_ms(id).is_some()
}

//! The event log, the outbox and webhook deliveries: one contract, three backends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use chrono::Utc;
use payment_api::model::{CardSummary, EventType, Payment, PaymentStatus, events_for};
use payment_api::store::outbox::{EventFilter, Saved};
use payment_api::store::{Claim, ClaimRequest, Commit, Committed, RecordChange, Store};
use payment_api::webhook::{Attempt, Delivery, DeliveryStatus, Endpoint, Schedule};
use tests::RedisServer;

fn payment(id: &str, merchant: &str) -> Payment {
    let now = Utc::now();
    serde_json::from_value(serde_json::json!({
        "id": id, "version": 1, "status": "processing", "amount": 1000, "currency": "USD",
        "order_id": null, "description": null, "metadata": {}, "card": CardSummary { brand: "visa".into(), last4: "4242".into() },
        "decline_code": null, "failure_reason": null, "bank_charge_id": null, "attempts": 0,
        "refunded_amount": 0, "created_at": now, "updated_at": now,
        "merchant_id": merchant, "idempotency_key": format!("key-{id}"), "reconcile_after": null
    }))
    .unwrap()
}

fn endpoint(id: &str, merchant: &str, events: &[&str]) -> Endpoint {
    Endpoint {
        id: id.into(),
        merchant_id: merchant.into(),
        url: "http://127.0.0.1:9/hooks".into(),
        enabled_events: events.iter().map(|e| e.to_string()).collect(),
        secret: "whsec_c2VjcmV0".into(),
        created_at: Utc::now(),
        fingerprint: "fp".into(),
        deleted_at: None,
    }
}

/// Creates `id` through a claim (its `payment.processing` event with it), then settles it.
async fn create_and_settle(store: &Store, id: &str, merchant: &str, status: PaymentStatus) -> Payment {
    let created = payment(id, merchant);
    let events = events_for(None, &created, Utc::now());
    let key = format!("{merchant}:payment:{id}");
    let request = ClaimRequest {
        key: &key,
        fingerprint: "fp",
        owner: "o",
        resource_id: id,
        lease: Duration::from_secs(30),
        retention: Duration::from_secs(3600),
        insert: Some(&created),
        events: &events,
    };
    assert_eq!(store.claim(request).await.unwrap(), Claim::Fresh);
    let settled = Payment { status, version: 2, ..created.clone() };
    let events = events_for(Some(&created), &settled, Utc::now());
    let commit = Commit { payment: &settled, record: RecordChange::Keep, events: &events };
    assert_eq!(store.commit(commit).await.unwrap(), Committed::Written);
    settled
}

fn types(events: &[payment_api::model::StoredEvent]) -> Vec<EventType> {
    events.iter().map(|e| e.kind).collect()
}

async fn contract(store: Store) {
    let tag = store.kind();
    let start = store.log_end().await.unwrap();
    // Endpoints hear of events after their creation.
    store.create_endpoint(&endpoint("we_1", "m1", &["*"])).await.unwrap();
    store.create_endpoint(&endpoint("we_2", "m1", &["payment.succeeded"])).await.unwrap();
    let again =
        store.create_endpoint(&Endpoint { secret: "other".into(), ..endpoint("we_1", "m1", &["*"]) }).await.unwrap();
    assert_eq!(again.secret, "whsec_c2VjcmV0", "{tag}: an existing endpoint is kept");
    let endpoints = store.endpoints("m1").await.unwrap();
    assert_eq!(endpoints.len(), 2, "{tag}");
    assert_eq!(store.endpoint("m1", "we_2").await.unwrap().unwrap().enabled_events, ["payment.succeeded"], "{tag}");
    assert!(store.endpoint("m2", "we_2").await.unwrap().is_none(), "{tag}: another merchant's");
    let first = create_and_settle(&store, "pay_e1", "m1", PaymentStatus::Succeeded).await;
    create_and_settle(&store, "pay_e2", "m1", PaymentStatus::Declined).await;
    create_and_settle(&store, "pay_e3", "m2", PaymentStatus::Succeeded).await;

    // A change that loses its race writes no event: events exist exactly for written changes.
    let stale = Payment { status: PaymentStatus::Failed, version: 2, ..first.clone() };
    let stale_events = events_for(Some(&first), &stale, Utc::now());
    assert_eq!(stale_events.len(), 1);
    let commit = Commit { payment: &stale, record: RecordChange::Keep, events: &stale_events };
    assert!(matches!(store.commit(commit).await.unwrap(), Committed::Conflict(_)), "{tag}");
    assert!(
        store.event(&stale_events[0].id).await.unwrap().is_none(),
        "{tag}: an event for a change that did not happen"
    );

    // Newest first, per merchant, filtered by type, paginated.
    let page = store.events("m1", &EventFilter { limit: 10, ..EventFilter::default() }).await.unwrap();
    assert_eq!(
        types(&page.events),
        [
            EventType::PaymentDeclined,
            EventType::PaymentProcessing,
            EventType::PaymentSucceeded,
            EventType::PaymentProcessing
        ],
        "{tag}"
    );
    assert!(!page.has_more);
    let body: serde_json::Value = serde_json::from_str(&page.events[0].body).unwrap();
    assert_eq!(body["object"], "event");
    assert_eq!(body["type"], "payment.declined");
    assert_eq!(body["data"]["object"]["id"], "pay_e2");
    assert_eq!(body["data"]["object"]["status"], "declined");
    let two = store.events("m1", &EventFilter { limit: 2, ..EventFilter::default() }).await.unwrap();
    assert!(two.has_more, "{tag}");
    let after = EventFilter { limit: 10, starting_after: Some(two.events[1].id.clone()), kind: None };
    let rest = store.events("m1", &after).await.unwrap();
    assert_eq!(types(&rest.events), [EventType::PaymentSucceeded, EventType::PaymentProcessing], "{tag}");
    let succeeded = EventFilter { limit: 10, kind: Some(EventType::PaymentSucceeded), starting_after: None };
    let only = store.events("m1", &succeeded).await.unwrap();
    assert_eq!(only.events.len(), 1, "{tag}");
    assert_eq!(store.event(&only.events[0].id).await.unwrap().unwrap(), only.events[0]);
    assert_eq!(store.events("m3", &succeeded).await.unwrap().events.len(), 0);

    // The log, oldest first, from any cursor.
    let log = store.log_after(Some(&start), 100).await.unwrap();
    assert_eq!(log.len(), 6, "{tag}");
    assert_eq!(log[0].event.kind, EventType::PaymentProcessing);
    assert_eq!(store.log_after(Some(&log[3].cursor), 100).await.unwrap().len(), 2, "{tag}");
    assert_eq!(store.log_end().await.unwrap(), log[5].cursor, "{tag}");

    // The outbox: each event fanned out once; deliveries created once.
    let outbox = store.outbox("c1", 100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(outbox.len(), 6, "{tag}");
    for entry in &outbox {
        let deliveries = payment_api::webhook::dispatch::deliveries_for(
            entry,
            &store.endpoints(&entry.event.merchant_id).await.unwrap(),
        );
        store.fan_out(&entry.event, Some(&entry.cursor), &deliveries).await.unwrap();
        // A second fan-out (a consumer that died before acknowledging, taken over) adds nothing.
        store.fan_out(&entry.event, None, &deliveries).await.unwrap();
    }
    assert!(store.outbox("c1", 100, Duration::from_secs(60)).await.unwrap().is_empty(), "{tag}");
    let succeeded_event = &only.events[0];
    let deliveries = store.deliveries(&succeeded_event.id).await.unwrap();
    assert_eq!(deliveries.iter().map(|d| d.endpoint_id.as_str()).collect::<Vec<_>>(), ["we_1", "we_2"], "{tag}");

    // Due deliveries are leased: taken once until the lease runs out (Redis keeps the time by its
    // own clock, so the lease really runs out here).
    let now = || Utc::now().timestamp_millis();
    let taken = store.take_due_deliveries(now() + 10, 300, 100).await.unwrap();
    assert_eq!(taken.len(), 5, "{tag}: 4 events for we_1, 1 for we_2");
    assert!(store.take_due_deliveries(now() + 10, 300, 100).await.unwrap().is_empty(), "{tag}: leased");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let retaken = store.take_due_deliveries(now() + 10, 60_000, 100).await.unwrap();
    assert_eq!(retaken.len(), 5, "{tag}: a dead worker's deliveries are taken again after the lease");
    let now = now();

    // An attempt is written over the version taken; a stale write is refused with the current.
    let delivery = retaken.iter().find(|d| d.event_id == succeeded_event.id && d.endpoint_id == "we_2").unwrap();
    let schedule = Schedule::parse("1").unwrap();
    let failed = Attempt { at: Utc::now(), status_code: Some(500), error: None, duration_ms: 3 };
    let next = delivery.after(failed, &schedule);
    assert_eq!(store.save_delivery(&next).await.unwrap(), Saved::Written, "{tag}");
    match store.save_delivery(&next).await.unwrap() {
        Saved::Conflict(Some(current)) => assert_eq!(current.attempts.len(), 1, "{tag}"),
        other => panic!("{tag}: {other:?}"),
    }
    let ok = Attempt { at: Utc::now(), status_code: Some(204), error: None, duration_ms: 3 };
    let done = next.after(ok, &schedule);
    assert_eq!(store.save_delivery(&done).await.unwrap(), Saved::Written);
    let stored: Vec<Delivery> = store.deliveries(&succeeded_event.id).await.unwrap();
    let we_2 = stored.iter().find(|d| d.endpoint_id == "we_2").unwrap();
    assert_eq!((we_2.status, we_2.attempts.len()), (DeliveryStatus::Delivered, 2), "{tag}");
    let later = store.take_due_deliveries(now + 1_000_000, 60_000, 100).await.unwrap();
    assert!(later.iter().all(|d| d.endpoint_id != "we_2"), "{tag}: a delivered delivery is never due again");

    // Deleting an endpoint keeps it, marked.
    let gone = Endpoint { deleted_at: Some(Utc::now()), ..endpoints[0].clone() };
    store.save_endpoint(&gone).await.unwrap();
    assert!(store.endpoints("m1").await.unwrap().iter().any(|e| e.deleted_at.is_some()), "{tag}");

    // Retention: events older than the horizon go, with their deliveries (Redis expires them).
    if tag != "redis" {
        let pruned = store.prune_events(Utc::now().timestamp_millis() + 1).await.unwrap();
        assert_eq!(pruned, 6, "{tag}");
        assert!(store.event(&succeeded_event.id).await.unwrap().is_none());
        assert!(store.deliveries(&succeeded_event.id).await.unwrap().is_empty());
        assert!(
            store.events("m1", &EventFilter { limit: 10, ..EventFilter::default() }).await.unwrap().events.is_empty()
        );
        assert!(store.take_due_deliveries(now + 1_000_000, 60_000, 100).await.unwrap().is_empty());
        let after = create_and_settle(&store, "pay_e4", "m1", PaymentStatus::Succeeded).await;
        assert_eq!(store.outbox("c1", 100, Duration::from_secs(60)).await.unwrap().len(), 2, "{tag}: {after:?}");
    }
}

#[tokio::test]
async fn memory_store_keeps_the_event_contract() {
    contract(Store::open("memory").await.unwrap()).await;
}

#[tokio::test]
async fn redb_store_keeps_the_event_contract_across_reopening() {
    let dir = std::env::temp_dir().join(format!("rp-redb-ev-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    let location = format!("redb:{}", dir.join("store.redb").display());
    let store = Store::open(&location).await.unwrap();
    let settled = create_and_settle(&store, "pay_r1", "m1", PaymentStatus::Succeeded).await;
    drop(store);
    // The log and the outbox survive a restart: nothing written is lost to the webhooks.
    let store = Store::open(&location).await.unwrap();
    let outbox = store.outbox("c", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        types(&outbox.iter().map(|e| e.event.clone()).collect::<Vec<_>>()),
        [EventType::PaymentProcessing, EventType::PaymentSucceeded],
        "{settled:?}"
    );
    drop(store);
    let fresh = format!("redb:{}", dir.join("contract.redb").display());
    contract(Store::open(&fresh).await.unwrap()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn redis_store_keeps_the_event_contract() {
    let Some(redis) = RedisServer::start("redis_store_keeps_the_event_contract").await else { return };
    contract(Store::open(&redis.url()).await.unwrap()).await;
}

/// Instances share the outbox as one consumer group: each entry goes to one of them, and an entry
/// a consumer took without finishing (it died) is claimed by another once it has sat long enough.
#[tokio::test]
async fn redis_outbox_entries_of_a_dead_consumer_are_claimed_by_another() {
    let Some(redis) = RedisServer::start("redis_outbox_entries_of_a_dead_consumer").await else { return };
    let store = Store::open(&redis.url()).await.unwrap();
    create_and_settle(&store, "pay_c1", "m1", PaymentStatus::Succeeded).await;
    let other = Store::open(&redis.url()).await.unwrap();
    let taken = store.outbox("dead", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(taken.len(), 2);
    assert!(other.outbox("alive", 10, Duration::from_secs(60)).await.unwrap().is_empty(), "each entry to one consumer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claimed = other.outbox("alive", 10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        claimed.iter().map(|e| &e.event.id).collect::<Vec<_>>(),
        taken.iter().map(|e| &e.event.id).collect::<Vec<_>>()
    );
    for entry in &claimed {
        other.fan_out(&entry.event, Some(&entry.cursor), &[]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(other.outbox("alive", 10, Duration::from_millis(200)).await.unwrap().is_empty(), "acknowledged");

    // A Redis that lost everything (the group too) is read again from scratch.
    redis.forget(&["rp:outbox"]).await;
    create_and_settle(&store, "pay_c2", "m1", PaymentStatus::Succeeded).await;
    assert_eq!(other.outbox("alive", 10, Duration::from_secs(60)).await.unwrap().len(), 2);
}

//! One contract, three backends: the same scenarios run against the memory, redb and Redis stores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use chrono::Utc;
use payment_api::model::{CardSummary, Change, Payment, PaymentStatus};
use payment_api::store::{
    Claim, ClaimRequest, Commit, Committed, PaymentFilter, RecordChange, RecordState, Store, StoredResponse,
};
use tests::{RedisServer, wait_for};

fn payment(id: &str, merchant: &str, order: &str) -> Payment {
    let now = Utc::now();
    Payment {
        id: id.to_owned(),
        version: 1,
        status: PaymentStatus::Processing,
        amount: 1_000,
        currency: "USD".into(),
        order_id: Some(order.to_owned()),
        description: None,
        metadata: Default::default(),
        card: CardSummary { brand: "visa".into(), last4: "4242".into() },
        decline_code: None,
        failure_reason: None,
        bank_charge_id: None,
        attempts: 0,
        refunded_amount: 0,
        refunds: Vec::new(),
        created_at: now,
        updated_at: now,
        merchant_id: merchant.to_owned(),
        idempotency_key: format!("key-of-{id}"),
        bank_key: None,
        reconcile_after: Some(now + Duration::from_secs(3600)),
        last_attempt_at: Some(now),
        capture: true,
        authorization_id: None,
        amount_captured: None,
        capture_before: None,
        canceled_at: None,
        cancellation_reason: None,
        pending: None,
        capture_key: None,
        cancel_key: None,
        acquirer: None,
        attempted_acquirers: Vec::new(),
    }
}

fn claim<'a>(key: &'a str, fingerprint: &'a str, resource: &'a str, insert: Option<&'a Payment>) -> ClaimRequest<'a> {
    ClaimRequest {
        key,
        fingerprint,
        owner: "test-owner",
        resource_id: resource,
        lease: Duration::from_secs(30),
        retention: Duration::from_secs(3600),
        insert,
        events: &[],
    }
}

fn answer(status: u16) -> StoredResponse {
    StoredResponse { status, body: format!("{{\"status\":{status}}}") }
}

/// `payment` as the next version of what was read.
fn bumped(read: &Payment, change: impl FnOnce(&mut Payment)) -> Payment {
    let mut payment = read.clone();
    change(&mut payment);
    payment.version = read.version + 1;
    payment
}

/// Stores `response` under `key` together with the changed payment.
async fn finish(store: &Store, key: &str, resource: &str, response: &StoredResponse, payment: &Payment) -> Committed {
    finish_for(store, key, resource, response, payment, Duration::from_secs(3600)).await
}

async fn finish_for(
    store: &Store,
    key: &str,
    resource: &str,
    response: &StoredResponse,
    payment: &Payment,
    retention: Duration,
) -> Committed {
    let record =
        RecordChange::Finish { key, resource_id: resource, fingerprint: Some("fp-restored"), response, retention };
    store.commit(Commit { payment, record, events: &[] }).await.unwrap()
}

/// Frees `key` (as `owner`) together with the changed payment.
async fn release(store: &Store, key: &str, resource: &str, owner: Option<&str>, payment: &Payment) -> Committed {
    let record = RecordChange::Release { key, resource_id: resource, owner };
    store.commit(Commit { payment, record, events: &[] }).await.unwrap()
}

async fn put(store: &Store, payment: &Payment) -> Committed {
    store.commit(Commit { payment, record: RecordChange::Keep, events: &[] }).await.unwrap()
}

/// Many requests at once, four per key: each key is claimed by exactly one, every change is kept
/// (the embedded store commits such bursts together), and each winner's answer replays.
async fn concurrent_claims(store: &Store) {
    let tag = store.kind();
    let mut contenders = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        contenders.push(tokio::spawn(async move {
            let key = format!("m9:payment:burst-{}", i % 16);
            let pay = payment(&format!("pay_{tag}_burst_{i}"), "m9", &key);
            let claimed = store.claim(claim(&key, "fp-burst", &pay.id, Some(&pay))).await.unwrap();
            if claimed == Claim::Fresh {
                let settled = bumped(&pay, |p| p.status = PaymentStatus::Succeeded);
                assert_eq!(finish(&store, &key, &pay.id, &answer(201), &settled).await, Committed::Written);
            }
            (key, pay.id, claimed)
        }));
    }
    let mut winners = std::collections::HashMap::new();
    for contender in contenders {
        let (key, id, claimed) = contender.await.unwrap();
        match claimed {
            Claim::Fresh => assert!(winners.insert(key, id).is_none(), "{tag}: two requests claimed one key"),
            Claim::InUse { .. } | Claim::Replay(_) => {}
            other => panic!("{tag}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 16, "{tag}: every key was claimed once");
    for (key, id) in winners {
        assert_eq!(store.claim(claim(&key, "fp-burst", "late", None)).await.unwrap(), Claim::Replay(answer(201)));
        assert_eq!(store.get_payment(&id).await.unwrap().unwrap().status, PaymentStatus::Succeeded, "{tag}");
    }
}

/// Every rule of the contract, against one store.
async fn contract(store: Store) {
    concurrent_claims(&store).await;
    let tag = store.kind();
    let p1 = payment(&format!("pay_{tag}_1"), "m1", "o1");

    // A new key creates the record and the payment together.
    assert_eq!(store.claim(claim("m1:payment:a", "fp-a", &p1.id, Some(&p1))).await.unwrap(), Claim::Fresh, "{tag}");
    assert_eq!(store.get_payment(&p1.id).await.unwrap().as_ref(), Some(&p1), "{tag}");
    let record = store.record("m1:payment:a").await.unwrap().unwrap();
    assert!(matches!(record.state, RecordState::InFlight { .. }), "{tag}");
    assert_eq!(record.resource_id, p1.id);

    // While the lease lives: in use; another body: mismatch.
    match store.claim(claim("m1:payment:a", "fp-a", "pay_other", None)).await.unwrap() {
        Claim::InUse { retry_after } => assert!(retry_after <= Duration::from_secs(30), "{tag}"),
        other => panic!("{tag}: {other:?}"),
    }
    assert_eq!(store.claim(claim("m1:payment:a", "fp-b", "pay_other", None)).await.unwrap(), Claim::Mismatch, "{tag}");

    // Finished: replayed, and the payment is updated in the same step.
    let done = bumped(&p1, |p| {
        p.status = PaymentStatus::Succeeded;
        p.reconcile_after = None;
    });
    assert_eq!(finish(&store, "m1:payment:a", &p1.id, &answer(201), &done).await, Committed::Written, "{tag}");
    assert_eq!(
        store.claim(claim("m1:payment:a", "fp-a", "x", None)).await.unwrap(),
        Claim::Replay(answer(201)),
        "{tag}"
    );
    assert_eq!(store.get_payment(&p1.id).await.unwrap().unwrap().status, PaymentStatus::Succeeded);
    // A final answer is never released.
    release(&store, "m1:payment:a", &p1.id, None, &bumped(&done, |_| {})).await;
    assert_eq!(
        store.claim(claim("m1:payment:a", "fp-a", "x", None)).await.unwrap(),
        Claim::Replay(answer(201)),
        "{tag}"
    );

    // Release frees an in-flight key, but only for the resource that holds it.
    let p2 = payment(&format!("pay_{tag}_2"), "m1", "o2");
    store.claim(claim("m1:payment:b", "fp-b", &p2.id, Some(&p2))).await.unwrap();
    let stranger = payment(&format!("pay_{tag}_stranger"), "m6", "o9");
    release(&store, "m1:payment:b", &stranger.id, Some("test-owner"), &stranger).await;
    assert!(
        matches!(store.claim(claim("m1:payment:b", "fp-b", "y", None)).await.unwrap(), Claim::InUse { .. }),
        "{tag}"
    );
    let failed = bumped(&p2, |p| {
        p.status = PaymentStatus::Failed;
        p.reconcile_after = None;
    });
    // Never from under a live lease: not by the reconciler, nor by another request.
    assert_eq!(release(&store, "m1:payment:b", &p2.id, None, &failed).await, Committed::Refused, "{tag}");
    assert_eq!(release(&store, "m1:payment:b", &p2.id, Some("someone-else"), &failed).await, Committed::Refused);
    assert_eq!(store.get_payment(&p2.id).await.unwrap().unwrap().status, PaymentStatus::Processing, "{tag}: untouched");
    // The lease holder may.
    assert_eq!(release(&store, "m1:payment:b", &p2.id, Some("test-owner"), &failed).await, Committed::Written);
    assert_eq!(store.get_payment(&p2.id).await.unwrap().unwrap().status, PaymentStatus::Failed);
    let p3 = payment(&format!("pay_{tag}_3"), "m1", "o2");
    assert_eq!(store.claim(claim("m1:payment:b", "fp-b", &p3.id, Some(&p3))).await.unwrap(), Claim::Fresh, "{tag}");

    // A stored 202 (processing) can still be released.
    let p3_waiting = bumped(&p3, |_| {});
    finish(&store, "m1:payment:b", &p3.id, &answer(202), &p3_waiting).await;
    release(&store, "m1:payment:b", &p3.id, None, &bumped(&p3_waiting, |_| {})).await;
    assert_eq!(store.record("m1:payment:b").await.unwrap(), None, "{tag}");

    // An expired lease is taken over, naming the payment to finish.
    let p4 = payment(&format!("pay_{tag}_4"), "m1", "o4");
    let short = ClaimRequest { lease: Duration::from_millis(50), ..claim("m1:payment:c", "fp-c", &p4.id, Some(&p4)) };
    assert_eq!(store.claim(short).await.unwrap(), Claim::Fresh);
    let taken = wait_for("the lease to expire", Duration::from_secs(5), || async {
        match store.claim(claim("m1:payment:c", "fp-c", "pay_new", None)).await.unwrap() {
            Claim::TakeOver { resource_id } => Some(resource_id),
            _ => None,
        }
    })
    .await;
    assert_eq!(taken, p4.id, "{tag}");
    // Once a lease has expired, the reconciler may release the key.
    let pd = payment(&format!("pay_{tag}_d"), "m9", "od");
    let short = ClaimRequest { lease: Duration::from_millis(50), ..claim("m1:payment:d", "fp-d", &pd.id, Some(&pd)) };
    assert_eq!(store.claim(short).await.unwrap(), Claim::Fresh);
    let pd_failed = bumped(&pd, |p| p.status = PaymentStatus::Failed);
    wait_for("the lease to expire", Duration::from_secs(5), || async {
        (release(&store, "m1:payment:d", &pd.id, None, &pd_failed).await == Committed::Written).then_some(())
    })
    .await;
    assert_eq!(store.record("m1:payment:d").await.unwrap(), None, "{tag}");

    // Keys of another merchant are other keys; records expire after the retention period.
    let pm2 = payment(&format!("pay_{tag}_m2"), "m8", "om2");
    let other =
        ClaimRequest { retention: Duration::from_millis(100), ..claim("m2:payment:a", "fp-a", &pm2.id, Some(&pm2)) };
    assert_eq!(store.claim(other).await.unwrap(), Claim::Fresh, "{tag}");
    finish_for(&store, "m2:payment:a", &pm2.id, &answer(201), &bumped(&pm2, |_| {}), Duration::from_millis(100)).await;
    wait_for("the record to expire", Duration::from_secs(5), || async {
        (store.claim(claim("m2:payment:a", "fp-z", "pay_m2b", None)).await.unwrap() == Claim::Fresh).then_some(())
    })
    .await;

    // Listing: per merchant, newest first, filters and a cursor.
    let page = store.list_payments("m1", &PaymentFilter { limit: 10, ..Default::default() }).await.unwrap();
    let ids: Vec<&str> = page.payments.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [p4.id.as_str(), p3.id.as_str(), p2.id.as_str(), p1.id.as_str()], "{tag}");
    let first = store.list_payments("m1", &PaymentFilter { limit: 2, ..Default::default() }).await.unwrap();
    assert!(first.has_more);
    let cursor = PaymentFilter { limit: 2, starting_after: Some(p3.id.clone()), ..Default::default() };
    let next = store.list_payments("m1", &cursor).await.unwrap();
    assert_eq!(next.payments.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [p2.id.as_str(), p1.id.as_str()]);
    assert!(!next.has_more, "{tag}");
    let by_order = PaymentFilter { limit: 10, order_id: Some("o2".into()), ..Default::default() };
    assert_eq!(store.list_payments("m1", &by_order).await.unwrap().payments.len(), 2, "{tag}");
    let by_status = PaymentFilter { limit: 10, status: Some(PaymentStatus::Failed), ..Default::default() };
    assert_eq!(store.list_payments("m1", &by_status).await.unwrap().payments.len(), 1, "{tag}");
    assert!(
        store
            .list_payments("m2", &PaymentFilter { limit: 10, ..Default::default() })
            .await
            .unwrap()
            .payments
            .is_empty()
    );

    // Pages of one walk together list each payment once, payments created in the same
    // microsecond included.
    let same_time = Utc::now();
    for n in 0..3 {
        let mut twin = payment(&format!("pay_{tag}_twin_{n}"), "m5", "twins");
        twin.created_at = same_time;
        store.claim(claim(&format!("m5:payment:twin-{n}"), "fp-t", &twin.id, Some(&twin))).await.unwrap();
    }
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let filter = PaymentFilter { limit: 1, starting_after: cursor.clone(), ..Default::default() };
        let page = store.list_payments("m5", &filter).await.unwrap();
        walked.extend(page.payments.iter().map(|p| p.id.clone()));
        cursor = page.payments.last().map(|p| p.id.clone());
        if !page.has_more {
            break;
        }
    }
    walked.sort();
    assert_eq!(walked, (0..3).map(|n| format!("pay_{tag}_twin_{n}")).collect::<Vec<_>>(), "{tag}");

    // The reconciler's view: processing payments once due, oldest first, and no others.
    let p4_stored = store.get_payment(&p4.id).await.unwrap().unwrap();
    let due_now = bumped(&p4_stored, |p| p.reconcile_after = Some(Utc::now() - Duration::from_secs(1)));
    assert_eq!(put(&store, &due_now).await, Committed::Written, "{tag}");
    let due: Vec<String> =
        store.due_payments(payment_api::store::now_ms(), 10).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(due, std::slice::from_ref(&p4.id), "{tag}");

    // A change is written only over the version it was derived from: the loser of a race gets the
    // winner's payment back and nothing of its own is written.
    let paid = store.get_payment(&p1.id).await.unwrap().unwrap();
    let first = paid.apply(&refund_change("re_1", 400), Utc::now()).unwrap();
    let second = paid.apply(&refund_change("re_2", 300), Utc::now()).unwrap();
    assert_eq!(put(&store, &first).await, Committed::Written, "{tag}");
    match put(&store, &second).await {
        Committed::Conflict(Some(current)) => {
            assert_eq!(*current, first, "{tag}: the conflict hands back the payment as it is now");
            let retried = current.apply(&refund_change("re_2", 300), Utc::now()).unwrap();
            assert_eq!(put(&store, &retried).await, Committed::Written, "{tag}");
        }
        other => panic!("{tag}: a stale write must conflict, not {other:?}"),
    }
    let both = store.get_payment(&p1.id).await.unwrap().unwrap();
    assert_eq!(both.refunds.len(), 2, "{tag}: no update lost");
    assert_eq!(both.refundable(), 300, "{tag}: both holds count");
    // A refund is held only while the payment has that much left.
    assert!(both.apply(&refund_change("re_3", 301), Utc::now()).is_err(), "{tag}");
    // A payment is due for the reconciler while a refund is pending, and not once none is.
    let due = due_within_the_hour(&store).await;
    assert!(due.contains(&p1.id), "{tag}: pending refunds are due: {due:?}");
    let read_version = both.version;
    let mut settled = both;
    for id in ["re_1", "re_2"] {
        settled = settled.apply(&Change::RefundSucceeded { id: id.into() }, Utc::now()).unwrap();
    }
    settled.version = read_version + 1;
    assert_eq!(put(&store, &settled).await, Committed::Written);
    let settled = store.get_payment(&p1.id).await.unwrap().unwrap();
    assert_eq!((settled.refunded_amount, settled.status), (700, PaymentStatus::PartiallyRefunded), "{tag}");
    let due = due_within_the_hour(&store).await;
    assert!(!due.contains(&p1.id), "{tag}: nothing pending: {due:?}");

    // A store that lost a payment and its record gets both back from the next finish.
    let lost = payment(&format!("pay_{tag}_lost"), "m7", "o-lost");
    let restored = bumped(&bumped(&lost, |_| {}), |p| p.status = PaymentStatus::Succeeded);
    assert_eq!(finish(&store, "m7:payment:lost", &lost.id, &answer(201), &restored).await, Committed::Written);
    assert_eq!(store.get_payment(&lost.id).await.unwrap().unwrap().status, PaymentStatus::Succeeded, "{tag}");
    assert_eq!(
        store.claim(claim("m7:payment:lost", "fp-restored", "x", None)).await.unwrap(),
        Claim::Replay(answer(201)),
        "{tag}"
    );
    let listed = store.list_payments("m7", &PaymentFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listed.payments.len(), 1, "{tag}: and it is listed again");
    // But never over a record that another payment holds now.
    let other = payment(&format!("pay_{tag}_other"), "m7", "o-other");
    let late = bumped(&other, |p| p.status = PaymentStatus::Succeeded);
    assert_eq!(finish(&store, "m7:payment:lost", &other.id, &answer(201), &late).await, Committed::Superseded);
    assert_eq!(store.get_payment(&other.id).await.unwrap(), None, "{tag}: nothing written");
    store.ping().await.unwrap();
}

async fn due_within_the_hour(store: &Store) -> Vec<String> {
    let due = store.due_payments(payment_api::store::now_ms() + 3_600_000, 10).await.unwrap();
    due.into_iter().map(|p| p.id).collect()
}

fn refund_change(id: &str, amount: i64) -> Change {
    Change::ReserveRefund {
        id: id.into(),
        amount: Some(amount),
        idempotency_key: format!("key-{id}"),
        at: Utc::now(),
        lease: chrono::Duration::seconds(30),
    }
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(Store::open("memory").await.unwrap()).await;
}

#[tokio::test]
async fn redb_store_keeps_the_contract_and_survives_reopening() {
    let dir = std::env::temp_dir().join(format!("rp-redb-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    let path = dir.join("store.redb");
    let location = format!("redb:{}", path.display());
    contract(Store::open(&location).await.unwrap()).await;
    // Everything written is there after reopening the file.
    let reopened = Store::open(&location).await.unwrap();
    assert_eq!(reopened.claim(claim("m1:payment:a", "fp-a", "x", None)).await.unwrap(), Claim::Replay(answer(201)));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let Some(redis) = RedisServer::start("redis_store_keeps_the_contract").await else { return };
    contract(Store::open(&redis.url()).await.unwrap()).await;
}

/// Records written by an earlier version (one JSON string per key) are still honoured: a finished
/// one replays, an in-flight one holds its key, and each keeps its expiry.
#[tokio::test]
async fn redis_records_of_the_earlier_json_format_are_still_honoured() {
    let Some(redis) = RedisServer::start("redis_records_of_the_earlier_json_format").await else { return };
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let done = r#"{"fingerprint":"fp-old","resource_id":"pay_old","owner":"gw/req","lease_until_ms":0,"done":true,"status":201,"body":"{\"id\":\"pay_old\"}"}"#;
    let held = format!(
        r#"{{"fingerprint":"fp-held","resource_id":"pay_held","owner":"gw/req2","lease_until_ms":{},"done":false,"status":0,"body":""}}"#,
        Utc::now().timestamp_millis() + 60_000
    );
    let _: () = redis::cmd("SET")
        .arg("rp:idem:m1:payment:old")
        .arg(done)
        .arg("PX")
        .arg(600_000)
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("rp:idem:m1:payment:held")
        .arg(held)
        .arg("PX")
        .arg(600_000)
        .query_async(&mut connection)
        .await
        .unwrap();

    let store = Store::open(&redis.url()).await.unwrap();
    let record = store.record("m1:payment:old").await.unwrap().unwrap();
    assert_eq!(record.resource_id, "pay_old");
    assert_eq!(
        record.state,
        RecordState::Done { response: StoredResponse { status: 201, body: r#"{"id":"pay_old"}"#.into() } }
    );
    let replay = store.claim(claim("m1:payment:old", "fp-old", "pay_new", None)).await.unwrap();
    assert_eq!(replay, Claim::Replay(StoredResponse { status: 201, body: r#"{"id":"pay_old"}"#.into() }));
    assert_eq!(store.claim(claim("m1:payment:old", "fp-other", "pay_new", None)).await.unwrap(), Claim::Mismatch);
    assert!(matches!(
        store.claim(claim("m1:payment:held", "fp-held", "pay_new", None)).await.unwrap(),
        Claim::InUse { .. }
    ));
    for key in ["rp:idem:m1:payment:old", "rp:idem:m1:payment:held"] {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut connection).await.unwrap();
        assert!(ttl > 500_000 && ttl <= 600_000, "{key} kept its expiry: {ttl}");
    }
}

#[tokio::test]
async fn an_unknown_store_location_is_refused() {
    for location in ["postgres://x", "redb:", "nothing"] {
        assert!(Store::open(location).await.is_err(), "{location}");
    }
}

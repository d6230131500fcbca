//! One contract, three backends: the same scenarios run against the memory, redb and Redis stores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use chrono::Utc;
use payment_api::model::{CardSummary, Payment, PaymentStatus, Refund};
use payment_api::store::{Claim, ClaimRequest, PaymentFilter, RecordState, Store, StoredResponse};
use tests::{RedisServer, wait_for};

fn payment(id: &str, merchant: &str, order: &str) -> Payment {
    let now = Utc::now();
    Payment {
        id: id.to_owned(),
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
        reconcile_after: Some(now + Duration::from_secs(3600)),
        last_attempt_at: Some(now),
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
    }
}

fn answer(status: u16) -> StoredResponse {
    StoredResponse { status, body: format!("{{\"status\":{status}}}") }
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
                let settled = Payment { status: PaymentStatus::Succeeded, ..pay.clone() };
                store.finish(&key, &pay.id, &answer(201), Duration::from_secs(3600), Some(&settled)).await.unwrap();
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
    let mut done = p1.clone();
    done.status = PaymentStatus::Succeeded;
    done.reconcile_after = None;
    store.finish("m1:payment:a", &p1.id, &answer(201), Duration::from_secs(3600), Some(&done)).await.unwrap();
    assert_eq!(
        store.claim(claim("m1:payment:a", "fp-a", "x", None)).await.unwrap(),
        Claim::Replay(answer(201)),
        "{tag}"
    );
    assert_eq!(store.get_payment(&p1.id).await.unwrap().unwrap().status, PaymentStatus::Succeeded);
    // A final answer is never released.
    store.release("m1:payment:a", &p1.id, None, None).await.unwrap();
    assert_eq!(
        store.claim(claim("m1:payment:a", "fp-a", "x", None)).await.unwrap(),
        Claim::Replay(answer(201)),
        "{tag}"
    );

    // Release frees an in-flight key, but only for the resource that holds it.
    let p2 = payment(&format!("pay_{tag}_2"), "m1", "o2");
    store.claim(claim("m1:payment:b", "fp-b", &p2.id, Some(&p2))).await.unwrap();
    store.release("m1:payment:b", "pay_someone_else", Some("test-owner"), None).await.unwrap();
    assert!(
        matches!(store.claim(claim("m1:payment:b", "fp-b", "y", None)).await.unwrap(), Claim::InUse { .. }),
        "{tag}"
    );
    let mut failed = p2.clone();
    failed.status = PaymentStatus::Failed;
    failed.reconcile_after = None;
    // Never from under a live lease: not by the reconciler, nor by another request.
    assert!(!store.release("m1:payment:b", &p2.id, None, Some(&failed)).await.unwrap(), "{tag}");
    assert!(!store.release("m1:payment:b", &p2.id, Some("someone-else"), Some(&failed)).await.unwrap(), "{tag}");
    assert_eq!(store.get_payment(&p2.id).await.unwrap().unwrap().status, PaymentStatus::Processing, "{tag}: untouched");
    // The lease holder may.
    assert!(store.release("m1:payment:b", &p2.id, Some("test-owner"), Some(&failed)).await.unwrap(), "{tag}");
    assert_eq!(store.get_payment(&p2.id).await.unwrap().unwrap().status, PaymentStatus::Failed);
    let p3 = payment(&format!("pay_{tag}_3"), "m1", "o2");
    assert_eq!(store.claim(claim("m1:payment:b", "fp-b", &p3.id, Some(&p3))).await.unwrap(), Claim::Fresh, "{tag}");

    // A stored 202 (processing) can still be released.
    store.finish("m1:payment:b", &p3.id, &answer(202), Duration::from_secs(3600), None).await.unwrap();
    store.release("m1:payment:b", &p3.id, None, None).await.unwrap();
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
    let short = ClaimRequest { lease: Duration::from_millis(50), ..claim("m1:payment:d", "fp-d", "pay_d", None) };
    assert_eq!(store.claim(short).await.unwrap(), Claim::Fresh);
    wait_for("the lease to expire", Duration::from_secs(5), || async {
        store.release("m1:payment:d", "pay_d", None, None).await.unwrap().then_some(())
    })
    .await;
    assert_eq!(store.record("m1:payment:d").await.unwrap(), None, "{tag}");

    // Keys of another merchant are other keys; records expire after the retention period.
    let other = ClaimRequest { retention: Duration::from_millis(100), ..claim("m2:payment:a", "fp-a", "pay_m2", None) };
    assert_eq!(store.claim(other).await.unwrap(), Claim::Fresh, "{tag}");
    store.finish("m2:payment:a", "pay_m2", &answer(201), Duration::from_millis(100), None).await.unwrap();
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

    // The reconciler's view: processing payments once due, oldest first, and no others.
    let mut due_now = p4.clone();
    due_now.reconcile_after = Some(Utc::now() - Duration::from_secs(1));
    store.put_payment(&due_now).await.unwrap();
    let due: Vec<String> =
        store.due_payments(payment_api::store::now_ms(), 10).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(due, std::slice::from_ref(&p4.id), "{tag}");

    // A refund is applied once, atomically, and updates the status.
    let mut paid = p1.clone();
    paid.status = PaymentStatus::Succeeded;
    paid.reconcile_after = None;
    store.put_payment(&paid).await.unwrap();
    let refund = Refund {
        id: "re_1".into(),
        object: "refund".into(),
        payment_id: p1.id.clone(),
        amount: 400,
        status: "succeeded".into(),
        bank_refund_id: None,
        created_at: Utc::now(),
    };
    for _ in 0..2 {
        let updated = store.apply_refund(&p1.id, &refund).await.unwrap().unwrap();
        assert_eq!((updated.refunded_amount, updated.status), (400, PaymentStatus::PartiallyRefunded), "{tag}");
    }
    assert_eq!(store.apply_refund("pay_missing", &refund).await.unwrap(), None);
    store.ping().await.unwrap();
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

//! The dashboard's model driven against a real gateway and bank, both in-process: the keys change
//! the bank's chaos, and the breaker's state on screen follows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use dashboard_tui::model::{Link, Msg};
use dashboard_tui::runtime::Dashboard;
use dashboard_tui::{Config, KeyCode, KeyEvent};
use tests::{ADMIN_KEY, BankConfig, MERCHANT_A, TestBank, TestGateway};

fn key(dashboard: &mut Dashboard, c: char) {
    dashboard.handle(Msg::Key(KeyEvent::from(KeyCode::Char(c))));
}

fn breaker_state(model: &dashboard_tui::model::Model) -> &str {
    model.breaker.as_ref().map_or("", |b| b.state.as_str())
}

#[tokio::test]
async fn the_outage_preset_opens_the_breaker_on_screen_and_healthy_closes_it() {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, "memory")).await;
    let mut dashboard = Dashboard::start(Config {
        api: gateway.url.clone(),
        bank: bank.url.clone(),
        admin_key: ADMIN_KEY.into(),
        api_key: Some(MERCHANT_A.1.into()),
        export_dir: std::env::temp_dir(),
    });
    let connected = dashboard
        .run_until(Duration::from_secs(10), |m| {
            m.api == Link::Up && m.bank == Link::Up && breaker_state(m) == "closed" && m.chaos.is_some()
        })
        .await;
    assert!(connected, "the dashboard connects: {:?} {:?}", dashboard.model.api, dashboard.model.bank);

    key(&mut dashboard, 't'); // traffic on
    key(&mut dashboard, '6'); // the outage preset
    let opened = dashboard
        .run_until(Duration::from_secs(20), |m| {
            breaker_state(m) == "open" && m.chaos.as_ref().is_some_and(|c| c.outage)
        })
        .await;
    assert!(
        opened,
        "the breaker opens and the outage shows: {:?} {:?}",
        dashboard.model.breaker, dashboard.model.chaos
    );
    assert!(dashboard.model.transitions.iter().any(|t| t.to == "open"), "the transition is on the timeline");

    key(&mut dashboard, '1'); // healthy
    let closed = dashboard
        .run_until(Duration::from_secs(20), |m| {
            breaker_state(m) == "closed" && m.transitions.front().is_some_and(|t| t.to == "closed")
        })
        .await;
    assert!(closed, "the breaker closes again: {:?}", dashboard.model.breaker);
    assert!(dashboard.model.transactions.iter().any(|t| t.status == "succeeded"), "traffic went through");
    key(&mut dashboard, 't');
}

#[tokio::test]
async fn a_bank_that_goes_away_is_shown_and_reconnected() {
    let bank = TestBank::start().await;
    let addr = bank.addr;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, "memory")).await;
    let mut dashboard = Dashboard::start(Config {
        api: gateway.url.clone(),
        bank: bank.url.clone(),
        admin_key: ADMIN_KEY.into(),
        api_key: None,
        export_dir: std::env::temp_dir(),
    });
    assert!(dashboard.run_until(Duration::from_secs(10), |m| m.bank == Link::Up).await);
    drop(bank);
    assert!(
        dashboard.run_until(Duration::from_secs(10), |m| matches!(m.bank, Link::Down(_))).await,
        "the bank's absence is shown"
    );
    let _back = TestBank::start_at(addr, BankConfig::default()).await;
    assert!(dashboard.run_until(Duration::from_secs(10), |m| m.bank == Link::Up).await, "and it reconnects by itself");
}

/// With two banks: a tile per bank, `n` moves the chaos keys to the backup, and an outage there
/// trips the backup's breaker only.
#[tokio::test]
async fn with_two_banks_the_keys_steer_the_selected_bank() {
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    let mut config = TestGateway::config(&primary.url, "memory");
    config.banks = vec![
        payment_api::config::BankSpec { name: "primary".into(), url: primary.url.clone() },
        payment_api::config::BankSpec { name: "backup".into(), url: backup.url.clone() },
    ];
    let gateway = TestGateway::start(config).await;
    let mut dashboard = Dashboard::start(Config {
        api: gateway.url.clone(),
        bank: primary.url.clone(),
        admin_key: ADMIN_KEY.into(),
        api_key: Some(MERCHANT_A.1.into()),
        export_dir: std::env::temp_dir(),
    });
    assert!(dashboard.run_until(Duration::from_secs(10), |m| m.banks.len() == 2 && m.chaos.is_some()).await);
    key(&mut dashboard, 'n'); // tune the backup
    key(&mut dashboard, 'b'); // and force its breaker open
    let steered = dashboard
        .run_until(Duration::from_secs(10), |m| {
            m.banks.iter().any(|b| b.name == "backup" && b.breaker.state == "forced_open")
        })
        .await;
    assert!(steered, "{:?}", dashboard.model.banks);
    key(&mut dashboard, '6'); // the outage preset, at the backup
    let shown = dashboard.run_until(Duration::from_secs(10), |m| m.chaos.as_ref().is_some_and(|c| c.outage)).await;
    assert!(shown);
    assert_eq!(backup.get_json("/chaos").await["outage"], true);
    assert_eq!(primary.get_json("/chaos").await["outage"], false, "the primary is untouched");
    assert_eq!(dashboard.model.banks[0].breaker.state, "closed");
}

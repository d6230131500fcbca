//! Snapshot tests of the dashboard's views, rendered from model states into ratatui's TestBackend.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dashboard_tui::model::{
    BankView, BreakerInfo, BreakerState, EndpointHealth, Latency, Link, LogEvent, Model, Msg, PaymentEvent,
    PaymentStatus, Stats, StreamItem, Transition, update,
};
use dashboard_tui::view::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::style::Color;
use serde_json::json;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000 + seconds, 0).unwrap()
}

fn render(model: &Model) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(140, 44)).unwrap();
    terminal.draw(|frame| view(model, frame)).unwrap();
    terminal
}

fn key(model: &mut Model, code: KeyCode) {
    update(model, Msg::Key(KeyEvent::from(code)));
}

/// A dashboard that has seen a minute of traffic, then an outage that opened the breaker.
fn busy_model() -> Model {
    let mut m = Model::new(at(0), true);
    update(&mut m, Msg::Api(Link::Up));
    update(&mut m, Msg::Bank(Link::Up));
    update(
        &mut m,
        Msg::ChaosPolled {
            config: serde_json::from_value(json!({
                "failure_rate": 0.0, "ambiguous_rate": 0.0, "timeout_rate": 0.0, "reset_rate": 0.0,
                "throttle_rate": 0.0, "slow_rate": 0.0, "slow_ms": 1500, "hang_ms": 5000,
                "latency": {"base_ms": 20, "jitter_ms": 30}, "outage": true,
            }))
            .unwrap(),
            stats: serde_json::from_value(json!({"since": "2026-11-18T00:00:00Z", "requests": 120,
                "injected": {"none": 100, "failure": 0, "ambiguous": 0, "timeout": 0,
                "reset": 0, "throttle": 0, "outage": 20, "slow": 0}}))
            .unwrap(),
        },
    );
    update(
        &mut m,
        Msg::BreakerPolled(BreakerInfo {
            state: BreakerState::Closed,
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 0.8,
            ..BreakerInfo::default()
        }),
    );
    for second in 0..60 {
        let rates = if second >= 50 {
            BTreeMap::from([("circuit_open".to_owned(), 18.0), ("bank_unavailable".to_owned(), 2.0)])
        } else {
            BTreeMap::from([("succeeded".to_owned(), 18.0), ("declined".to_owned(), 2.0)])
        };
        let stats = Stats {
            at: Some(at(second)),
            totals: BTreeMap::from([("succeeded".to_owned(), 900), ("circuit_open".to_owned(), 180)]),
            rates,
            latency_ms: Latency { p50: 1.2, p95: 3.4, p99: 180.5 },
            in_flight: 2,
            retries: 14,
            budget_refusals: 1,
            attempt_timeouts: 0,
            breaker: None,
        };
        update(&mut m, Msg::Stream(StreamItem::Stats(Box::new(stats))));
    }
    update(&mut m, Msg::Tick(at(50)));
    update(
        &mut m,
        Msg::BreakerPolled(BreakerInfo {
            state: BreakerState::Open,
            failure_rate: 0.55,
            slow_call_rate: 0.0,
            calls_in_window: 20,
            rejected: 180,
            opened_at: Some(at(50)),
            open_until: Some(at(55)),
            trips: 1,
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 0.8,
            ..BreakerInfo::default()
        }),
    );
    update(
        &mut m,
        Msg::Stream(StreamItem::Breaker(Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open,
            reason: "failure rate 55% ≥ 50% over the last 20 calls".into(),
            at: at(50),
            open_for_ms: Some(5_000),
            bank: None,
        })),
    );
    // Five one-step payments, then three authorizations: one captured in part, one canceled, one
    // still held.
    let events = [
        ("succeeded", true, 0),
        ("declined", true, 0),
        ("processing", true, 0),
        ("failed", true, 0),
        ("succeeded", true, 0),
        ("requires_capture", false, 0),
        ("requires_capture", false, 0),
        ("requires_capture", false, 0),
        ("succeeded", false, 1_000),
        ("canceled", false, 0),
    ];
    for (i, (status, capture, captured)) in events.into_iter().enumerate() {
        let id = if i < 5 { i } else { 5 + (i - 5) % 3 };
        update(
            &mut m,
            Msg::Stream(StreamItem::Payment(PaymentEvent {
                payment_id: format!("pay_0000000{id}-aaaa-bbbb-cccc-dddddddddddd"),
                merchant_id: "shop".into(),
                status: PaymentStatus::parse(status).unwrap(),
                decline_code: None,
                failure_reason: None,
                capture,
                amount_captured: captured,
                amount: 1_999 + i as i64,
                currency: "USD".into(),
                attempts: 1 + i as u32 % 3,
                latency_ms: Some(10.0 * i as f64),
                at: at(40 + i as i64),
                event_id: None,
                event_type: None,
            })),
        );
    }
    for (level, message) in
        [("INFO", "request finished"), ("WARN", "circuit breaker opened"), ("INFO", "reconciled payment")]
    {
        let fields = BTreeMap::from([("status".to_owned(), "503".to_owned())]);
        update(
            &mut m,
            Msg::Stream(StreamItem::Log(LogEvent {
                at: at(50),
                level: level.into(),
                target: "payment_api".into(),
                message: message.into(),
                fields,
            })),
        );
    }
    update(&mut m, Msg::Tick(at(52)));
    m
}

#[test]
fn waiting_for_the_services() {
    let model = Model::new(at(0), false);
    insta::assert_snapshot!(render(&model).backend());
}

#[test]
fn a_tripped_breaker_with_traffic_and_chaos() {
    let model = busy_model();
    let terminal = render(&model);
    insta::assert_snapshot!(terminal.backend());
    // The breaker's state is drawn on red when open.
    let buffer = terminal.backend().buffer();
    let open_cell = (0..buffer.area.width).map(|x| &buffer[(x, 1)]).find(|cell| cell.symbol() == "O").expect("OPEN");
    assert_eq!(open_cell.bg, Color::Red);
}

#[test]
fn the_services_gone_and_the_display_paused() {
    let mut model = busy_model();
    update(&mut model, Msg::Api(Link::Down("connection refused".into())));
    update(&mut model, Msg::Bank(Link::Down("no answer".into())));
    key(&mut model, KeyCode::Char('p'));
    update(&mut model, Msg::Notice("bank chaos preset: outage".into()));
    insta::assert_snapshot!(render(&model).backend());
}

#[test]
fn the_help_overlay() {
    let mut model = busy_model();
    key(&mut model, KeyCode::Char('?'));
    insta::assert_snapshot!(render(&model).backend());
}

#[test]
fn a_log_filter_applied() {
    let mut model = busy_model();
    for c in "/breaker".chars() {
        key(&mut model, KeyCode::Char(c));
    }
    key(&mut model, KeyCode::Enter);
    insta::assert_snapshot!(render(&model).backend());
}

#[test]
fn webhook_delivery_health_per_endpoint() {
    let mut model = busy_model();
    let health = |id: &str, url: &str, breaker: &str, delivered, retrying, failed, last: &str| EndpointHealth {
        endpoint_id: id.into(),
        url: url.into(),
        delivered,
        retrying,
        failed,
        breaker: breaker.into(),
        last_result: Some(last.into()),
    };
    update(
        &mut model,
        Msg::Stream(StreamItem::Webhooks(vec![
            health("we_1", "http://127.0.0.1:8090/webhooks", "closed", 412, 3, 0, "204"),
            health("we_2", "https://down.example.com/hooks", "open", 0, 57, 4, "no answer within 10000 ms"),
        ])),
    );
    let terminal = render(&model);
    insta::assert_snapshot!(terminal.backend());
    let buffer = terminal.backend().buffer();
    let row = (0..buffer.area.height)
        .find(|y| (0..buffer.area.width).map(|x| buffer[(x, *y)].symbol()).collect::<String>().contains("down.example"))
        .expect("the failing endpoint's line");
    let line: String = (0..buffer.area.width).map(|x| buffer[(x, row)].symbol()).collect();
    let start = line.find("open").expect("its breaker's state");
    let column = line[..start].chars().count() as u16;
    assert_eq!(buffer[(column, row)].fg, Color::Red, "an open breaker is drawn red");
}

#[test]
fn a_breaker_tile_per_bank_and_the_bank_the_chaos_keys_tune() {
    let mut model = busy_model();
    let bank = |name: &str, url: &str, state: BreakerState, failure_rate, share, success_rate| BankView {
        name: name.into(),
        url: url.into(),
        breaker: BreakerInfo { state, failure_rate, ..BreakerInfo::default() },
        success_rate,
        share,
        currencies: None,
    };
    update(
        &mut model,
        Msg::BanksPolled(vec![
            bank("primary", "http://127.0.0.1:8081", BreakerState::Open, 0.62, 0.35, 0.41),
            bank("backup", "http://127.0.0.1:8082", BreakerState::Closed, 0.02, 0.65, 0.97),
        ]),
    );
    let commands = update(&mut model, Msg::Key(KeyEvent::from(KeyCode::Char('n'))));
    assert_eq!(commands, vec![dashboard_tui::model::Command::SelectBank("http://127.0.0.1:8082".into())]);
    let commands = update(&mut model, Msg::Key(KeyEvent::from(KeyCode::Char('b'))));
    assert_eq!(
        commands,
        vec![dashboard_tui::model::Command::SetBreaker("forced_open", Some("backup".into()))],
        "the breaker keys steer the selected bank"
    );
    model.notice = None;
    let terminal = render(&model);
    insta::assert_snapshot!(terminal.backend());
    let buffer = terminal.backend().buffer();
    let text: String = (0..buffer.area.height)
        .map(|y| (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect::<String>() + "\n")
        .collect();
    assert!(text.contains("Bank chaos: backup (n: next bank)"), "{text}");
    assert!(text.contains("▶backup"), "the tuned bank is marked");
}

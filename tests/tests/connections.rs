//! What a client can do to the servers' connections, tried on the gateway and the bank over raw
//! sockets: connections that never finish their headers or their body, idle keep-alive
//! connections, more connections than allowed, early answers to unread bodies, malformed headers,
//! doubled credentials and card numbers in the wrong place.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tests::{ADMIN_KEY, BankConfig, MERCHANT_A, TestBank, TestGateway, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short limits, so that the tests see them act.
fn quick(flags: &mut http_conventions::serve::ConnectionFlags) {
    flags.header_read_timeout_ms = 300;
    flags.body_read_timeout_ms = 300;
    flags.idle_timeout_ms = 2_000;
}

async fn gateway() -> TestGateway {
    let bank = Box::leak(Box::new(TestBank::start().await));
    let mut config = TestGateway::config(&bank.url, "memory");
    quick(&mut config.connections);
    TestGateway::start(config).await
}

async fn bank() -> TestBank {
    let mut config = BankConfig::default();
    quick(&mut config.connections);
    TestBank::start_with(config).await
}

/// Reads until the server closes the connection (or resets it), returning what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the server has closed `stream`; fails the test if it never does.
async fn closed_by_the_server(mut stream: TcpStream, what: &str) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut stream))
        .await
        .unwrap_or_else(|_| panic!("{what}: the server never closed the connection"))
}

/// One response read off a keep-alive connection: the head and the body (by content-length).
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            while received.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed mid-body");
                received.extend_from_slice(&chunk[..n]);
            }
            return (head, received[end + 4..end + 4 + length].to_vec());
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn silent_and_half_sent_heads_are_closed_on_both_servers() {
    let (gateway, bank) = (gateway().await, bank().await);
    for (name, addr) in [("gateway", gateway.addr), ("bank", bank.addr)] {
        // Not a byte sent.
        closed_by_the_server(connect(addr).await, &format!("{name}: silent")).await;
        // Half a head, then nothing.
        let mut half = connect(addr).await;
        half.write_all(b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: app").await.unwrap();
        closed_by_the_server(half, &format!("{name}: half a head")).await;
        // A head dripped a byte at a time never finishes in time either.
        let mut drip = connect(addr).await;
        let dripping = tokio::spawn(async move {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle().take(4_000) {
                if drip.write_all(&[*byte]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        });
        assert!(dripping.await.unwrap(), "{name}: a dripping head was cut off");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_idle_timeout() {
    let (gateway, bank) = (gateway().await, bank().await);
    for (name, addr) in [("gateway", gateway.addr), ("bank", bank.addr)] {
        let mut stream = connect(addr).await;
        // Two requests on one connection, the second after longer than the header timeout but
        // within the idle timeout: a keep-alive connection waits on the idle clock.
        for _ in 0..2 {
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let (head, _) = read_response(&mut stream).await;
            assert!(head.starts_with("http/1.1 200"), "{name}: {head}");
            // The client's think time: past the header timeout, well within the idle timeout.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        closed_by_the_server(stream, &format!("{name}: idle")).await;
    }
}

#[tokio::test]
async fn a_half_sent_body_is_408_problem_json_and_closes() {
    let (gateway, bank) = (gateway().await, bank().await);
    let requests = [
        (gateway.addr, format!("POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nIdempotency-Key: half\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"amount\":", MERCHANT_A.1)),
        (bank.addr, "POST /v1/charges HTTP/1.1\r\nHost: x\r\nIdempotency-Key: half\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"amount\":".to_owned()),
    ];
    for (addr, request) in requests {
        let mut stream = connect(addr).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let received = closed_by_the_server(stream, "half a body").await;
        let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 408"), "{text}");
        assert!(text.contains("content-type: application/problem+json") && text.contains("connection: close"));
    }
    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn past_the_connection_limit_the_idlest_connection_makes_room() {
    let bank = TestBank::start().await;
    let mut config = TestGateway::config(&bank.url, "memory");
    config.connections.max_connections = 4;
    config.connections.header_read_timeout_ms = 60_000;
    let gateway = TestGateway::start(config).await;
    // The test's own client holds none: these four silent connections fill the gateway.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(gateway.addr).await);
    }
    // A payment still gets through, on a fresh connection.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let response = client
        .post(gateway.at("/v1/payments"))
        .bearer_auth(MERCHANT_A.1)
        .header("Idempotency-Key", "limit-1")
        .json(&tests::payment_body(100, "4242424242424242", "limit"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // And the idlest silent connection was closed to make room.
    let mut closed = 0;
    for stream in silent {
        let mut stream = stream;
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no silent connection was closed to make room");
}

#[tokio::test]
async fn an_early_answer_to_an_unread_body_says_connection_close() {
    let gateway = gateway().await;
    let body = r#"{"amount":100,"currency":"USD","card":{"number":"4242424242424242","exp_month":12,"exp_year":2099,"cvc":"123"}}"#;
    let cases = [
        ("POST /v1/payments", "Authorization: Bearer wrong-key-0123456789\r\nIdempotency-Key: k\r\n", 401),
        ("POST /v1/payments", format!("Authorization: Bearer {}\r\n", MERCHANT_A.1).leak() as &str, 400),
    ];
    for (line, headers, status) in cases {
        let mut stream = connect(gateway.addr).await;
        let request = format!(
            "{line} HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, answer) = read_response(&mut stream).await;
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(head.contains("connection: close"), "an early {status} must say the connection ends: {head}");
        assert!(head.contains("content-type: application/problem+json"));
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(answer["code"].is_string());
    }
    // A request whose body was read keeps its connection.
    let mut stream = connect(gateway.addr).await;
    let request = format!(
        "POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nIdempotency-Key: keep\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        MERCHANT_A.1,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 201") && !head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn a_malformed_header_is_answered_with_problem_json_on_both_servers() {
    let (gateway, bank) = (gateway().await, bank().await);
    for (name, addr) in [("gateway", gateway.addr), ("bank", bank.addr)] {
        for request in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n"[..],
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n"[..],
            &b"GET /he\x7flthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ] {
            let mut stream = connect(addr).await;
            stream.write_all(request).await.unwrap();
            let received = closed_by_the_server(stream, name).await;
            let text = String::from_utf8_lossy(&received);
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{name}: {text}"));
            assert!(head.starts_with("HTTP/1.1 400"), "{name}: {head}");
            assert!(head.contains("content-type: application/problem+json"), "{name}: {head}");
            let problem: Value = serde_json::from_str(body).unwrap();
            assert_eq!(problem["code"], "invalid_request", "{name}");
            assert_eq!(problem["status"], 400);
        }
    }
}

#[tokio::test]
async fn two_authorization_headers_are_400_and_admin_takes_only_bearer() {
    let gateway = gateway().await;
    let client = reqwest::Client::new();
    for path in ["/v1/payments", "/admin/breaker"] {
        let response = client
            .get(gateway.at(path))
            .header("Authorization", format!("Bearer {}", MERCHANT_A.1))
            .header("Authorization", format!("Bearer {ADMIN_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "invalid_request");
    }
    for scheme in ["Basic", "Token", "bearerx", ""] {
        let response = client
            .get(gateway.at("/admin/breaker"))
            .header("Authorization", format!("{scheme} {ADMIN_KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "scheme `{scheme}`");
    }
    let bearer = client.get(gateway.at("/admin/breaker")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(bearer.status(), 200);
}

#[tokio::test]
async fn no_error_echoes_a_card_number_whatever_its_json_type() {
    let gateway = gateway().await;
    let bank = bank().await;
    let numbers = ["4242424242424242", "4242 4242 4242 4242", "4242424242424241"];
    for number in numbers {
        for card in [
            format!(r#"{{"number":{},"exp_month":12,"exp_year":2099,"cvc":"123"}}"#, number.replace(' ', "")),
            format!(r#"{{"number":["{number}"],"exp_month":12,"exp_year":2099,"cvc":"123"}}"#),
            format!(r#"{{"number":"4242424242424242","exp_month":"{number}","exp_year":2099,"cvc":"123"}}"#),
            format!(r#"{{"number":"4242424242424242","exp_month":12,"exp_year":2099,"cvc":"123","{number}":1}}"#),
        ] {
            let body = format!(r#"{{"amount":100,"currency":"USD","card":{card}}}"#);
            let to_gateway = gateway
                .client
                .post(gateway.at("/v1/payments"))
                .bearer_auth(MERCHANT_A.1)
                .header("Idempotency-Key", "echo")
                .header("Content-Type", "application/json")
                .body(body.clone());
            let to_bank = bank
                .client
                .post(bank.at("/v1/charges"))
                .header("Idempotency-Key", "echo")
                .header("Content-Type", "application/json")
                .body(body);
            for request in [to_gateway, to_bank] {
                let response = request.send().await.unwrap();
                assert!(response.status().is_client_error(), "{}", response.status());
                let text = response.text().await.unwrap();
                let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                assert!(!text.replace([' ', '-'], "").contains(&digits), "echoed a card number: {text}");
            }
        }
    }
    // Nor a path that is a card number.
    let response = gateway.get_as(MERCHANT_A.1, "/v1/payments/4242424242424242").await;
    assert_eq!(response.status(), 404);
    assert!(!response.text().await.unwrap().contains("4242424242424242"));
    wait_for("nothing charged", Duration::from_secs(1), || async { (bank.charge_count().await == 0).then_some(()) })
        .await;
}

//! Connections that never end: a client that sends nothing, half a request head or half a body,
//! or keeps an idle keep-alive connection, is cut off by the listener's timeouts, and past
//! `max_connections` a new connection is closed at once, on the REST and MCP listeners.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use worktruck_kit::testing::Backend;

/// How long until the server closes `s` (reads until EOF or a reset), at most `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn idle_and_slow_connections_are_cut_off_and_the_cap_holds() {
    let stack = common::Stack::start_with(Backend::Sqlite, |cfg| {
        // REST's timeouts are long enough that the connections filling it stay while the cap is
        // tried, on however slow a machine; MCP's are short.
        (cfg.rest.header_timeout_ms, cfg.rest.body_timeout_ms) = (3_000, 3_000);
        (cfg.mcp.header_timeout_ms, cfg.mcp.body_timeout_ms) = (500, 500);
        cfg.rest.max_connections = 40;
    })
    .await;
    for base in [stack.base.clone(), stack.mcp.clone()] {
        let target = addr(&base);
        let mut silent = TcpStream::connect(&target).await.unwrap();
        let mut half_head = TcpStream::connect(&target).await.unwrap();
        half_head.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut half_body = TcpStream::connect(&target).await.unwrap();
        let path = if base == stack.base { "/api/v1/contacts" } else { "/mcp/v1" };
        half_body
            .write_all(format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{{\"kind\":", stack.key).as_bytes())
            .await
            .unwrap();
        let mut idle = TcpStream::connect(&target).await.unwrap();
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = [0u8; 1024];
        let n = idle.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200") || n > 0);
        for (what, s) in [("silent", &mut silent), ("half a head", &mut half_head), ("half a body", &mut half_body), ("idle keep-alive", &mut idle)] {
            let took = closed_within(s, Duration::from_secs(5)).await;
            assert!(took.is_some(), "{base}: a connection with {what} is closed");
        }
    }

    // 40 connections fill the REST listener; the 41st is closed at once, and once they are gone
    // the listener serves again.
    let target = addr(&stack.base);
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(&target).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(&target).await.unwrap();
    let took = closed_within(&mut over, Duration::from_millis(400)).await;
    assert!(took.is_some(), "past max_connections a new connection is closed at once, before any timeout");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = stack.http.get(format!("{}/health", stack.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    stack.stop().await;
}

//! What an idle stream costs, in three parts measured one after the other on one server: the
//! running turn (a model call waiting 60 s for its first token, no reader), the client's
//! keep-alive HTTP connection (one request served, then idle), and the SSE reader attached to
//! that connection. Raw TCP, so each part is exactly one connection per stream.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::REQUEST_TIMEOUT;
use crate::server::Server;

/// KiB of server RSS per stream for each part, and how many streams were measured.
pub(crate) struct IdleCost {
    pub(crate) streams: usize,
    pub(crate) turn_kib: f64,
    pub(crate) connection_kib: f64,
    pub(crate) reader_kib: f64,
}

impl IdleCost {
    pub(crate) fn total_kib(&self) -> f64 {
        self.turn_kib + self.connection_kib + self.reader_kib
    }
}

/// One HTTP/1.1 request on `conn`; returns the head and, when the reply has a length, its body.
/// A streamed reply (SSE) returns after its head.
async fn request(conn: &mut TcpStream, head: &str, body: &str) -> Result<(String, String), String> {
    let request = format!(
        "{head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".to_owned());
            }
            got.extend_from_slice(&chunk[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            let Some(length) = length else {
                return Ok((head, String::new()));
            };
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).to_string();
                return Ok((head, body));
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn address(server: &Server) -> String {
    let rest = server.base.trim_start_matches("http://");
    rest.split_once('/').map_or(rest, |(addr, _)| addr).to_owned()
}

/// Opens `n` idle streams in three steps and measures the RSS each step adds (each step waits a
/// second for the server to settle). Streams that fail to open are left out of the division.
pub(crate) async fn measure(server: &Server, n: usize) -> Result<IdleCost, String> {
    let addr = address(server);
    let settle = || tokio::time::sleep(Duration::from_secs(1));
    let before = server.rss_kib();
    // 1. The turns: one new user each (a session of its own), sends on closed connections.
    let mut ids = Vec::with_capacity(n);
    for user in 1..=n {
        let mut conn = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        let head =
            format!("POST /v1/chat/send?streaming=true HTTP/1.1\r\nHost: x\r\nX-User-ID: {user}\r\nConnection: close");
        let (_, body) = request(&mut conn, &head, &json!({"message": "/mock slow 60000"}).to_string()).await?;
        let started: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        ids.push((user, started["stream_id"].as_str().unwrap_or_default().to_owned()));
    }
    settle().await;
    let with_turns = server.rss_kib();
    // 2. The connections: one request each, then idle (the server keeps them alive 5 s, so the
    //    readers attach right after the measurement).
    let mut conns = Vec::with_capacity(n);
    let opened = Instant::now();
    for (user, _) in &ids {
        let mut conn = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        let head = format!("GET /v1/chat/health HTTP/1.1\r\nHost: x\r\nX-User-ID: {user}");
        request(&mut conn, &head, "").await?;
        conns.push(conn);
    }
    if opened.elapsed() > Duration::from_secs(3) {
        return Err("opening the connections took longer than the server's keep-alive allows".to_owned());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_connections = server.rss_kib();
    // 3. The readers: each connection reads its turn's stream.
    let mut readers = 0;
    for (conn, (user, id)) in conns.iter_mut().zip(&ids) {
        let head = format!("GET /v1/chat/stream/{id} HTTP/1.1\r\nHost: x\r\nX-User-ID: {user}");
        if request(conn, &head, "")
            .await
            .is_ok_and(|(head, _)| head.contains(" 200 "))
        {
            readers += 1;
        }
    }
    settle().await;
    let with_readers = server.rss_kib();
    if readers < n {
        return Err(format!("only {readers} of {n} readers attached"));
    }
    let per = |from: u64, to: u64| to.saturating_sub(from) as f64 / n as f64;
    Ok(IdleCost {
        streams: n,
        turn_kib: per(before, with_turns),
        connection_kib: per(with_turns, with_connections),
        reader_kib: per(with_connections, with_readers),
    })
}

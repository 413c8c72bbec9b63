//! `cluster`: two nodes on one PostgreSQL database. Each turn starts on node A and is read at once
//! by a reader on A (its own node) and one on B (which follows it from the database, woken by
//! `NOTIFY`); the lag is, per text event, when B's reader got it minus when A's reader got it, on
//! one clock (this process's).

#![expect(
    clippy::disallowed_methods,
    reason = "the load generator is a plain multi-thread tokio program, outside any actor"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::say;
use crate::server::{Backend, Server, client, open_stream, take_frames};
use crate::stats::{Report, Samples};

/// The first events of a stream may reach a reader as catch-up (before it connected): not a
/// push, so they are left out of the lag.
const CATCH_UP: u64 = 3;

/// When each event (by id) reached a reader, until the stream's terminal event.
async fn arrivals(client: &reqwest::Client, base: &str, stream_id: &str) -> Result<HashMap<u64, Instant>, String> {
    let mut bytes = open_stream(client, base, 1, stream_id).await?.bytes_stream();
    let mut pending = Vec::new();
    let mut seen = HashMap::new();
    while let Some(chunk) = bytes.next().await {
        pending.extend_from_slice(&chunk.map_err(|e| format!("stream body: {e}"))?);
        let now = Instant::now();
        for (id, data) in take_frames(&mut pending) {
            if let Some(id) = id {
                seen.insert(id, now);
            }
            if data.contains(r#""type":"done""#) {
                return Ok(seen);
            }
            if data.contains(r#""type":"error""#) {
                return Err(format!("error event: {data}"));
            }
        }
    }
    Err("the stream ended without done".into())
}

/// One turn on A read on A and on B: the lag of each event past the catch-up.
async fn one(client: &reqwest::Client, a: &str, b: &str) -> Result<Vec<Duration>, String> {
    let resp = client
        .post(format!("{a}/send?streaming=true"))
        .header("X-User-ID", "1")
        .json(&json!({ "message": "/mock words 40" }))
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let reply: Value = resp.json().await.map_err(|e| format!("send body: {e}"))?;
    let stream_id = reply["stream_id"].as_str().ok_or("no stream id")?.to_owned();
    let (local, remote) = tokio::join!(arrivals(client, a, &stream_id), arrivals(client, b, &stream_id));
    let (local, remote) = (local?, remote?);
    Ok(local
        .iter()
        .filter(|(id, _)| **id > CATCH_UP)
        .filter_map(|(id, at)| Some(remote.get(id)?.saturating_duration_since(*at)))
        .collect())
}

pub(crate) async fn cluster(quick: bool, backend: &Backend, report: &mut Report) {
    if matches!(backend, Backend::Sqlite) {
        say("\n== cluster: needs --database postgres://… (SQLite is single-node)");
        return;
    }
    let (clients, per_client) = if quick { (4, 4) } else { (16, 12) };
    say(&format!(
        "\n== cluster: 2 nodes on one PostgreSQL; turns on A (40 chunks, 20 ms apart) read on A and on B; \
         {clients} at once"
    ));
    say("flush_ms | turns | events | errors | remote-reader lag p50 / p99 / p99.9 (ms) | wall s");
    let mut rows = Vec::new();
    for flush_ms in [100, 25] {
        let (a, b) = Server::pair_on(backend, 20, flush_ms).await;
        rows.push(step(clients, per_client, flush_ms, &a.base, &b.base).await);
    }
    report.insert("cluster", json!(rows));
}

/// One configuration: `clients` clients run `per_client` turns each on A, read on A and B.
async fn step(clients: usize, per_client: usize, flush_ms: u64, a: &str, b: &str) -> Value {
    let client = client(clients * 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, a, b) = (client.clone(), a.to_owned(), b.to_owned());
            tokio::spawn(async move {
                let mut lags = Vec::new();
                let mut errors = Vec::new();
                for _ in 0..per_client {
                    if Instant::now() > deadline {
                        break;
                    }
                    match one(&client, &a, &b).await {
                        Ok(more) => lags.extend(more),
                        Err(err) => errors.push(err),
                    }
                }
                (lags, errors)
            })
        })
        .collect();
    let (mut lags, mut errors) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await {
            Ok((more, failed)) => {
                lags.extend(more);
                errors.extend(failed);
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    let events = lags.len();
    let lag = Samples::new(lags);
    let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|p| lag.pct(p) / 1000.0);
    let turns = (clients * per_client).saturating_sub(errors.len());
    say(&format!(
        "{flush_ms:>8} | {turns:>5} | {events:>6} | {:>6} | {p50:>6.1} / {p99:>6.1} / {p999:>6.1} | {:.1}",
        errors.len(),
        started.elapsed().as_secs_f64()
    ));
    if let Some(e) = errors.first() {
        say(&format!("  first error: {e}"));
    }
    json!({
        "flush_ms": flush_ms, "turns": turns, "events": events, "errors": errors.len(),
        "lag_ms": {"p50": p50, "p99": p99, "p999": p999},
    })
}

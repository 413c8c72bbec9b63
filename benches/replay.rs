//! Replay latency: a client reconnects with `Last-Event-ID` after missing 1,000 events and reads
//! them all (to the terminal event) over real HTTP + SSE, from memory and, after the stream has
//! left memory, from SQLite. Reports p50/p99/max in ms over 200 reconnects each.
//!
//! Run: `cargo bench --bench replay`.

use std::time::{Duration, Instant};

use aichat::config::Config;
use futures::StreamExt;
use serde_json::json;

const MISSED: u64 = 1_000;
const SAMPLES: usize = 200;

#[expect(clippy::expect_used, reason = "a benchmark that cannot run should stop loudly")]
async fn replay(client: &reqwest::Client, base: &str, stream_id: &str) -> Duration {
    let started = Instant::now();
    let resp = client
        .get(format!("{base}/stream/{stream_id}"))
        .header("X-User-ID", "1")
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("reconnect");
    let mut body = resp.bytes_stream();
    let mut frames = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body");
        frames += chunk.windows(4).filter(|w| w == b"id: ").count() as u64;
    }
    let elapsed = started.elapsed();
    assert!(frames >= MISSED, "got {frames} events");
    elapsed
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
fn main() {
    aichat::install_crypto_provider();
    let rows = actix_web::rt::System::new().block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.server.port = 0;
        config.server.stream_retention_secs = 2;
        config.limits.turns_per_minute_per_user = 0;
        config.database.url = format!("sqlite:{}", dir.path().join("bench.db").display());
        config.finish(&|_| None).expect("config");
        let running = aichat::server::start(&config, aichat::reload::Loader::fixed(config.clone())).expect("server");
        let base = format!("http://{}/v1/chat", running.addr);
        actix_web::rt::spawn(running.server);
        let client = reqwest::Client::new();
        let start: serde_json::Value = client
            .post(format!("{base}/send?streaming=true"))
            .header("X-User-ID", "1")
            .json(&json!({ "message": format!("/mock words {}", MISSED + 1) }))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        let stream_id = start["stream_id"].as_str().expect("stream id").to_owned();
        let mut rows = Vec::new();
        for source in ["memory", "storage"] {
            if source == "storage" {
                // Wait until the finished stream has left memory.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let health: serde_json::Value = client
                        .get(format!("{base}/health"))
                        .send()
                        .await
                        .expect("health")
                        .json()
                        .await
                        .expect("json");
                    if health["streams_in_memory"] == 0 {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the stream never left memory");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            replay(&client, &base, &stream_id).await;
            let mut samples = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                samples.push(replay(&client, &base, &stream_id).await);
            }
            samples.sort();
            rows.push((
                source,
                percentile(&samples, 0.5),
                percentile(&samples, 0.99),
                percentile(&samples, 1.0),
            ));
        }
        running.handle.stop(true).await;
        rows
    });
    say(&format!(
        "replay: reconnect that missed {MISSED} events, read to the end, {SAMPLES} samples"
    ));
    say("source  |  p50 ms |  p99 ms |  max ms");
    let mut report = Vec::new();
    for (source, p50, p99, max) in rows {
        say(&format!("{source:<7} | {p50:>7.3} | {p99:>7.3} | {max:>7.3}"));
        report.push(json!({ "source": source, "p50_ms": p50, "p99_ms": p99, "max_ms": max }));
    }
    say(&json!({ "bench": "replay", "missed_events": MISSED, "results": report }).to_string());
}

#[expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn say(line: &str) {
    println!("{line}");
}

//! The scenarios: overhead, ttft, streams, throughput, tools.

#![expect(
    clippy::disallowed_methods,
    reason = "the load generator is a plain multi-thread tokio program, outside any actor"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::provider::MockProvider;
use serde_json::{Value, json};

use crate::say;
use crate::server::{Backend, Server, Turn, client, direct, rss_kib, turn};
use crate::stats::{Report, Samples};

// ---------------------------------------------------------------------------------------------
// Scenarios

/// `clients` concurrent clients run `per_client` turns each (a new session every 20 turns);
/// returns the turns and the errors.
pub(crate) async fn drive(
    base: &str,
    clients: usize,
    per_client: usize,
    message: &'static str,
    deadline: Instant,
) -> (Vec<Turn>, Vec<String>, Duration) {
    let http = client(clients);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                let (mut turns, mut errors, mut session) = (Vec::new(), Vec::new(), None::<String>);
                for i in 0..per_client {
                    if Instant::now() > deadline {
                        break;
                    }
                    if i % 20 == 0 {
                        session = None;
                    }
                    let user = (c + 1) as u64;
                    match turn(&http, &base, user, session.as_deref(), message, Duration::MAX).await {
                        Ok(t) => {
                            session = Some(t.session_id.clone());
                            turns.push(t);
                        }
                        Err(e) => errors.push(e),
                    }
                }
                (turns, errors)
            })
        })
        .collect();
    let (mut turns, mut errors) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await {
            Ok((t, e)) => {
                turns.extend(t);
                errors.extend(e);
            }
            Err(e) => errors.push(format!("client task: {e}")),
        }
    }
    (turns, errors, started.elapsed())
}

/// The mock's own time for `count` requests at `concurrency`.
pub(crate) async fn drive_direct(concurrency: usize, count: usize, message: &'static str) -> Vec<(Duration, Duration)> {
    let mock = Arc::new(MockProvider::new(Duration::ZERO));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mock = Arc::clone(&mock);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..count / concurrency {
                    out.push(direct(&mock, message).await);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all
}

/// A scenario's key in the report: its name on SQLite, another on PostgreSQL.
fn scenario_key(on_sqlite: &'static str, on_postgres: &'static str, backend: &Backend) -> &'static str {
    match backend {
        Backend::Sqlite => on_sqlite,
        Backend::Postgres(_) => on_postgres,
    }
}

pub(crate) const OVERHEAD_MESSAGE: &str = "Hello, how is the database doing?";

pub(crate) async fn overhead(quick: bool, backend: &Backend, report: &mut Report) {
    let server = Server::start_on(backend, 0, "").await;
    let mut rows = Vec::new();
    say(&format!(
        "\n== overhead on {}: full turns (send → SSE → done, stored), 0 ms mock; µs",
        backend.name()
    ));
    say(
        "concurrency | turns | errors | through p50 / p99 / p99.9 | direct p50 / p99 / p99.9 | added p50 / p99 / p99.9",
    );
    for (concurrency, per_client) in [
        (1usize, if quick { 300 } else { 2000 }),
        (64, if quick { 10 } else { 50 }),
    ] {
        // Warm-up: connections, session actors, SQLite pages.
        let _ = drive(
            &server.base,
            concurrency,
            3,
            OVERHEAD_MESSAGE,
            Instant::now() + Duration::from_secs(30),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (turns, errors, _) = drive(&server.base, concurrency, per_client, OVERHEAD_MESSAGE, deadline).await;
        let through = Samples::new(turns.iter().map(|t| t.total).collect());
        let direct = Samples::new(
            drive_direct(concurrency, turns.len().max(concurrency), OVERHEAD_MESSAGE)
                .await
                .into_iter()
                .map(|d| d.1)
                .collect(),
        );
        let [t50, t99, t999] = [0.5, 0.99, 0.999].map(|p| through.pct(p));
        let [d50, d99, d999] = [0.5, 0.99, 0.999].map(|p| direct.pct(p));
        say(&format!(
            "{concurrency:>11} | {:>5} | {:>6} | {t50:>8.0} / {t99:>6.0} / {t999:>6.0} | {d50:>6.1} / {d99:>6.1} / {d999:>6.1} | {:>6.0} / {:>6.0} / {:>6.0}",
            turns.len(),
            errors.len(),
            t50 - d50,
            t99 - d99,
            t999 - d999
        ));
        if let Some(e) = errors.first() {
            say(&format!("  first error: {e}"));
        }
        rows.push(json!({
            "concurrency": concurrency, "turns": turns.len(), "errors": errors.len(),
            "through_us": {"p50": t50, "p99": t99, "p999": t999},
            "direct_us": {"p50": d50, "p99": d99, "p999": d999},
            "added_us": {"p50": t50 - d50, "p99": t99 - d99, "p999": t999 - d999},
        }));
    }
    say("target: added p99 ≤ 1,000 µs at concurrency 1");
    report.insert(scenario_key("overhead", "overhead_postgres", backend), json!(rows));
}

pub(crate) async fn ttft(quick: bool, report: &mut Report) {
    let server = Server::start(0, "").await;
    let _ = drive(
        &server.base,
        1,
        5,
        OVERHEAD_MESSAGE,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    let count = if quick { 300 } else { 2000 };
    let (turns, errors, _) = drive(
        &server.base,
        1,
        count,
        OVERHEAD_MESSAGE,
        Instant::now() + Duration::from_secs(60),
    )
    .await;
    let through = Samples::new(turns.iter().map(|t| t.first_token).collect());
    let direct = Samples::new(
        drive_direct(1, turns.len().max(1), OVERHEAD_MESSAGE)
            .await
            .into_iter()
            .map(|d| d.0)
            .collect(),
    );
    let [t50, t99] = [0.5, 0.99].map(|p| through.pct(p));
    let [d50, d99] = [0.5, 0.99].map(|p| direct.pct(p));
    say("\n== ttft: send → first text event through the full path, 0 ms mock, concurrency 1; µs");
    say("turns | errors | through p50 / p99 | direct p50 / p99 | added p50 / p99");
    say(&format!(
        "{:>5} | {:>6} | {t50:>7.0} / {t99:>6.0} | {d50:>6.1} / {d99:>6.1} | {:>6.0} / {:>6.0}",
        turns.len(),
        errors.len(),
        t50 - d50,
        t99 - d99
    ));
    say("target: added TTFT p99 ≤ 250 µs");
    report.insert(
        "ttft",
        json!({"turns": turns.len(), "errors": errors.len(),
               "through_us": {"p50": t50, "p99": t99}, "direct_us": {"p50": d50, "p99": d99},
               "added_us": {"p50": t50 - d50, "p99": t99 - d99}}),
    );
}

pub(crate) const PACE: Duration = Duration::from_millis(20);
pub(crate) const CHUNKS: u64 = 64;

pub(crate) async fn streams(quick: bool, budget: Instant, report: &mut Report) {
    let sizes: &[usize] = if quick { &[256, 1024] } else { &[256, 1024, 2048, 4096] };
    say("\n== streams: N paced streams at once (64 chunks, 20 ms apart), one connection each");
    say("     N | errors | frames lost | frames late (>200 ms gap) | RSS per stream KiB | wall s");
    let mut rows = Vec::new();
    for &n in sizes {
        if Instant::now() > budget {
            say(&format!("{n:>6} | skipped: time budget spent"));
            break;
        }
        let server = Server::start(PACE.as_millis() as u64, "").await;
        let http = client(n);
        let before = server.rss_kib();
        let started = Instant::now();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = {
            let (peak, pid) = (Arc::clone(&peak), server.child.id());
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let message: &'static str = "/mock words 64";
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (http, base) = (http.clone(), server.base.clone());
                tokio::spawn(async move { turn(&http, &base, (i + 1) as u64, None, message, PACE * 10).await })
            })
            .collect();
        let (mut errors, mut lost, mut late, mut first_error) = (0u64, 0u64, 0u64, None);
        for task in tasks {
            match task.await {
                Ok(Ok(t)) => {
                    lost += CHUNKS.saturating_sub(t.frames) + u64::from(!t.contiguous);
                    late += t.late;
                }
                Ok(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        let wall = started.elapsed().as_secs_f64();
        sampler.abort();
        let per_stream = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before) as f64 / n as f64;
        say(&format!(
            "{n:>6} | {errors:>6} | {lost:>11} | {late:>25} | {per_stream:>18.1} | {wall:>6.1}"
        ));
        if let Some(e) = first_error {
            say(&format!("  first error: {e}"));
        }
        rows.push(json!({"n": n, "errors": errors, "lost": lost, "late": late,
                         "rss_kib_per_stream": per_stream, "wall_s": wall}));
    }
    // Idle streams: a turn whose first token is 60 s away holds its stream open with nothing to
    // send; what the turn, its client's connection and its SSE reader each add to the RSS.
    let n = if quick { 512 } else { 2048 };
    let server = Server::start(0, "").await;
    let _ = drive(
        &server.base,
        8,
        3,
        OVERHEAD_MESSAGE,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    let idle = match crate::idle::measure(&server, n).await {
        Ok(cost) => {
            say(&format!(
                "idle: {} streams open, KiB RSS per stream: turn waiting for its first token {:.1} + keep-alive connection {:.1} + SSE reader {:.1} = {:.1}",
                cost.streams,
                cost.turn_kib,
                cost.connection_kib,
                cost.reader_kib,
                cost.total_kib()
            ));
            json!({"n": cost.streams, "rss_kib_per_stream": cost.total_kib(), "turn_kib": cost.turn_kib,
                   "connection_kib": cost.connection_kib, "reader_kib": cost.reader_kib})
        }
        Err(e) => {
            say(&format!("idle: not measured: {e}"));
            json!({"error": e})
        }
    };
    say("targets: ≥ 2,048 paced streams with no lost frame; ≤ 16 KiB RSS per idle stream");
    report.insert("streams", json!({"paced": rows, "idle": idle}));
}

pub(crate) async fn throughput(quick: bool, budget: Instant, backend: &Backend, report: &mut Report) {
    let server = Server::start_on(backend, 0, "").await;
    let message: &'static str = "/mock slow 20";
    let step = Duration::from_secs(if quick { 3 } else { 6 });
    say(&format!(
        "\n== throughput on {}: turns/s with persistence, each turn's mock takes 20 ms; rising concurrency",
        backend.name()
    ));
    say("concurrency | turns | errors | turns/s | p50 ms | p99 ms");
    let mut rows = Vec::new();
    let mut best = 0.0f64;
    for concurrency in [16usize, 32, 64, 128, 256, 512, 1024] {
        if Instant::now() > budget {
            say("  stopped: time budget spent");
            break;
        }
        let deadline = Instant::now() + step;
        let (turns, errors, wall) = drive(&server.base, concurrency, usize::MAX, message, deadline).await;
        let latency = Samples::new(turns.iter().map(|t| t.total).collect());
        let rate = turns.len() as f64 / wall.as_secs_f64();
        let (p50, p99) = (latency.pct(0.5) / 1000.0, latency.pct(0.99) / 1000.0);
        say(&format!(
            "{concurrency:>11} | {:>5} | {:>6} | {rate:>7.0} | {p50:>6.1} | {p99:>6.1}",
            turns.len(),
            errors.len()
        ));
        rows.push(
            json!({"concurrency": concurrency, "turns": turns.len(), "errors": errors.len(),
                         "turns_per_s": rate, "p50_ms": p50, "p99_ms": p99}),
        );
        if !errors.is_empty() || p99 > 1000.0 {
            if let Some(e) = errors.first() {
                say(&format!("  first error: {e}"));
            }
            break;
        }
        best = best.max(rate);
    }
    say(&format!(
        "best: {best:.0} turns/s with p99 < 1 s and no error (target ≥ 3,000)"
    ));
    report.insert(
        scenario_key("throughput", "throughput_postgres", backend),
        json!({"steps": rows, "best_turns_per_s": best}),
    );
}

#[expect(clippy::expect_used, reason = "a benchmark that cannot run should stop loudly")]
pub(crate) async fn tools(quick: bool, report: &mut Report) {
    const D_MS: u64 = 200;
    let sizes: &[usize] = if quick { &[1, 8] } else { &[1, 3, 8, 32] };
    let exe = env!("CARGO_BIN_EXE_aichat");
    let mut walls: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    // Parallel: room for every call of the largest batch (the default cap is 16 per server).
    for max_concurrency in [64usize, 1] {
        let extra = format!(
            "[[mcp.servers]]\nname = \"demo\"\ncommand = \"{exe}\"\nargs = [\"mcp-demo\"]\nmax_concurrency = {max_concurrency}\n"
        );
        let server = Server::start(0, &extra).await;
        let http = client(4);
        server.wait_for_tools(&http).await;
        for &n in sizes {
            let calls: Vec<_> = (0..n)
                .map(|_| json!({"name": "demo__sleep_ms", "arguments": {"ms": D_MS}}))
                .collect();
            let message = format!("/mock tools {}", Value::Array(calls));
            let mut best = Duration::MAX;
            for _ in 0..if quick { 1 } else { 3 } {
                let t = turn(&http, &server.base, 1, None, &message, Duration::MAX)
                    .await
                    .expect("tool turn");
                best = best.min(t.total);
            }
            walls.insert((max_concurrency, n), best.as_secs_f64() * 1000.0 / D_MS as f64);
        }
    }
    say("\n== tools: one turn with N calls of 200 ms; wall time / 200 ms (best of 3)");
    say("   N | parallel | max_concurrency = 1 | ratio");
    let mut rows = Vec::new();
    for &n in sizes {
        let (p, s) = (walls[&(64, n)], walls[&(1, n)]);
        say(&format!("{n:>4} | {p:>8.3} | {s:>19.3} | {:>5.2}", s / p));
        rows.push(json!({"n": n, "parallel_wall_over_d": p, "sequential_wall_over_d": s, "ratio": s / p}));
    }
    say("target: N = 32 parallel ≤ 1.10");
    report.insert("tools", json!(rows));
}

//! The `soak` scenario: sustained load for a bounded time (60 s by default, `--soak-secs N`, 20 s
//! with `--quick`) at concurrency 64 with a 20 ms mock: plain turns, a tool round every fourth
//! turn, and every eighth turn read by a client that disconnects after its first event and
//! resumes with `Last-Event-ID`. Reports turns/s and p99 per 10 s, the server's RSS, WAL size and
//! open files over time, errors, and turns lost (a `done` the client saw whose user message is
//! not stored).

#![expect(
    clippy::disallowed_methods,
    reason = "the load generator is a plain multi-thread tokio program, outside any actor"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::server::{Server, client, rss_kib, take_frames, turn};
use crate::stats::{Report, Samples};
use crate::{REQUEST_TIMEOUT, say};

const CLIENTS: usize = 64;
const TURNS_PER_SESSION: usize = 50;
const BUCKET: Duration = Duration::from_secs(10);
const PLAIN: &str = "/mock slow 20";
const TOOL: &str = r#"/mock tools [{"name":"demo__echo","arguments":{"text":"soak"}}]"#;

/// What one client did.
#[derive(Default)]
struct Outcome {
    /// When each turn ended (since the start) and how long it took.
    done: Vec<(Duration, Duration)>,
    errors: Vec<String>,
    /// Turns that ended with `done`, per (user, session).
    per_session: HashMap<(u64, String), usize>,
}

/// One sample of the server process.
struct Probe {
    at: Duration,
    rss_kib: u64,
    wal_bytes: u64,
    fds: usize,
}

fn probe(server: &Server, at: Duration) -> Probe {
    let pid = server.child.id();
    let mut wal = server.db().into_os_string();
    wal.push("-wal");
    Probe {
        at,
        rss_kib: rss_kib(pid),
        wal_bytes: std::fs::metadata(wal).map_or(0, |m| m.len()),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
    }
}

/// A turn whose reader drops the stream after its first event and resumes after that event's id.
async fn resumed_turn(http: &reqwest::Client, base: &str, user: u64, session: Option<&str>) -> Result<String, String> {
    let mut body = json!({ "message": PLAIN });
    if let Some(session) = session {
        body["session_id"] = json!(session);
    }
    let reply: Value = http
        .post(format!("{base}/send?streaming=true"))
        .header("X-User-ID", user.to_string())
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?
        .json()
        .await
        .map_err(|e| format!("send body: {e}"))?;
    let stream_id = reply["stream_id"].as_str().ok_or("no stream id")?.to_owned();
    let session_id = reply["session_id"].as_str().unwrap_or_default().to_owned();
    let url = format!("{base}/stream/{stream_id}");
    let (seen, _) = read(http, &url, user, None, true).await?;
    let (_, done) = read(http, &url, user, Some(seen), false).await?;
    if done {
        Ok(session_id)
    } else {
        Err("the resumed stream ended without done".into())
    }
}

/// Reads a stream (after `after`), stopping after the first event when `first_only`. Returns the
/// last id seen and whether `done` came.
async fn read(
    http: &reqwest::Client,
    url: &str,
    user: u64,
    after: Option<u64>,
    first_only: bool,
) -> Result<(u64, bool), String> {
    let mut request = http.get(url).header("X-User-ID", user.to_string());
    if let Some(id) = after {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let resp = request.send().await.map_err(|e| format!("stream: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("stream: {}", resp.status()));
    }
    let mut bytes = resp.bytes_stream();
    let (mut pending, mut last) = (Vec::new(), after.unwrap_or(0));
    while let Some(chunk) = bytes.next().await {
        pending.extend_from_slice(&chunk.map_err(|e| format!("stream body: {e}"))?);
        for (id, data) in take_frames(&mut pending) {
            last = id.unwrap_or(last);
            if data.contains(r#""type":"done""#) {
                return Ok((last, true));
            }
            if data.contains(r#""type":"error""#) {
                return Err(format!("error event: {data}"));
            }
            if first_only {
                return Ok((last, false));
            }
        }
    }
    Ok((last, false))
}

async fn client_loop(http: reqwest::Client, base: String, user: u64, start: Instant, deadline: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    let mut session: Option<String> = None;
    for i in 0usize.. {
        if Instant::now() > deadline {
            break;
        }
        if i % TURNS_PER_SESSION == 0 {
            session = None;
        }
        let began = Instant::now();
        let result = if i % 8 == 5 {
            resumed_turn(&http, &base, user, session.as_deref()).await
        } else {
            let message = if i % 4 == 3 { TOOL } else { PLAIN };
            turn(&http, &base, user, session.as_deref(), message, Duration::MAX)
                .await
                .map(|t| t.session_id)
        };
        match result {
            Ok(id) => {
                outcome.done.push((start.elapsed(), began.elapsed()));
                *outcome.per_session.entry((user, id.clone())).or_default() += 1;
                session = Some(id);
            }
            Err(err) => outcome.errors.push(err),
        }
    }
    outcome
}

/// The user messages stored in a session (every turn stores exactly one).
async fn stored_user_messages(http: &reqwest::Client, base: &str, user: u64, session: &str) -> usize {
    let mut count = 0;
    for page in 1.. {
        let url = format!("{base}/sessions/{session}/messages?page={page}&limit=100");
        let body: Value = match http.get(url).header("X-User-ID", user.to_string()).send().await {
            Ok(resp) => resp.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        count += messages.iter().filter(|m| m["role"] == "user").count();
        if messages.len() < 100 {
            break;
        }
    }
    count
}

pub(crate) async fn soak(quick: bool, seconds: Option<u64>, report: &mut Report) {
    let length = Duration::from_secs(seconds.unwrap_or(if quick { 20 } else { 60 }));
    let exe = env!("CARGO_BIN_EXE_aichat");
    let extra =
        format!("[[mcp.servers]]\nname = \"demo\"\ncommand = \"{exe}\"\nargs = [\"mcp-demo\"]\nmax_concurrency = 64\n");
    let server = Server::start(0, &extra).await;
    let http = client(CLIENTS);
    server.wait_for_tools(&http).await;
    say(&format!(
        "\n== soak: {} s at concurrency {CLIENTS}, 20 ms mock, a tool round every 4th turn, a resumed reader every 8th",
        length.as_secs()
    ));
    let start = Instant::now();
    let deadline = start + length;
    let mut probes = vec![probe(&server, Duration::ZERO)];
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client_loop(
                http.clone(),
                server.base.clone(),
                (c + 1) as u64,
                start,
                deadline,
            ))
        })
        .collect();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5).min(deadline.saturating_duration_since(Instant::now()))).await;
        probes.push(probe(&server, start.elapsed()));
    }
    let mut all = Outcome::default();
    for task in clients {
        if let Ok(Ok(outcome)) = tokio::time::timeout(REQUEST_TIMEOUT, task).await {
            all.done.extend(outcome.done);
            all.errors.extend(outcome.errors);
            all.per_session.extend(outcome.per_session);
        } else {
            all.errors.push("a client did not finish".into());
        }
    }
    probes.push(probe(&server, start.elapsed()));
    let mut lost = 0;
    for ((user, session), done) in &all.per_session {
        let stored = stored_user_messages(&http, &server.base, *user, session).await;
        lost += done.saturating_sub(stored);
    }

    say("interval | turns | turns/s | p99 ms");
    let buckets = length.as_secs().div_ceil(BUCKET.as_secs()).max(1);
    let mut intervals = Vec::new();
    for b in 0..buckets {
        let (from, to) = (BUCKET * b as u32, BUCKET * (b as u32 + 1));
        let took: Vec<Duration> = all
            .done
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, t)| *t)
            .collect();
        let span = to.min(length).saturating_sub(from).as_secs_f64().max(1e-9);
        let rate = took.len() as f64 / span;
        let p99 = Samples::new(took.clone()).pct(0.99) / 1000.0;
        say(&format!(
            "{:>4}-{:<3} | {:>5} | {rate:>7.0} | {p99:>6.1}",
            from.as_secs(),
            to.as_secs(),
            took.len()
        ));
        intervals.push(json!({"from_s": from.as_secs(), "turns": took.len(), "turns_per_s": rate, "p99_ms": p99}));
    }
    let rate = |i: &Value| i["turns_per_s"].as_f64().unwrap_or(0.0);
    let last_over_first = match (intervals.first(), intervals.last()) {
        (Some(first), Some(last)) if rate(first) > 0.0 => rate(last) / rate(first),
        _ => 0.0,
    };
    say("t s | RSS MiB | WAL MiB | open files");
    for p in &probes {
        say(&format!(
            "{:>3} | {:>7.1} | {:>7.1} | {:>4}",
            p.at.as_secs(),
            p.rss_kib as f64 / 1024.0,
            p.wal_bytes as f64 / 1_048_576.0,
            p.fds
        ));
    }
    let peak_wal = probes.iter().map(|p| p.wal_bytes).max().unwrap_or(0);
    let peak_rss = probes.iter().map(|p| p.rss_kib).max().unwrap_or(0);
    say(&format!(
        "turns {} · errors {} · lost {lost} · last/first interval turns/s {last_over_first:.2} · peak WAL {:.1} MiB · peak RSS {:.1} MiB",
        all.done.len(),
        all.errors.len(),
        peak_wal as f64 / 1_048_576.0,
        peak_rss as f64 / 1024.0
    ));
    if let Some(e) = all.errors.first() {
        say(&format!("  first error: {e}"));
    }
    report.insert(
        "soak",
        json!({
            "seconds": length.as_secs(), "concurrency": CLIENTS, "turns": all.done.len(),
            "errors": all.errors.len(), "lost": lost, "intervals": intervals,
            "last_over_first_turns_per_s": last_over_first,
            "rss_kib": probes.iter().map(|p| p.rss_kib).collect::<Vec<_>>(),
            "wal_bytes": probes.iter().map(|p| p.wal_bytes).collect::<Vec<_>>(),
            "open_files": probes.iter().map(|p| p.fds).collect::<Vec<_>>(),
            "peak_wal_bytes": peak_wal, "peak_rss_kib": peak_rss,
        }),
    );
}

//! The `scaling` scenario: what a turn and the reads cost as the stored work grows. A database is
//! prepared directly through the storage layer (history of one session: 10 → 10,000 messages;
//! the whole database: 10,000 → 1,000,000 messages over many sessions and users), then the
//! server runs on it: a full turn in the big session (0 ms mock), `GET /sessions` and
//! `GET /sessions/{id}/messages` (one page), each 200 times at concurrency 1, p50 / p99 in µs; and
//! a turn with 10 → 1,000 more tools on offer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::ids::UserId;
use actors::model::{ChatMessage, Role, Session, TitleSource};
use actors::storage::{ChatStore, SqliteStore, TurnWrite};
use serde_json::json;

use crate::say;
use crate::server::{Server, client, turn};
use crate::stats::{Report, Samples};

const REPEAT: usize = 200;

/// Writes `sessions` sessions of `per_session` messages for users 2.. (user 1 gets the first).
#[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
fn prepare(dir: &std::path::Path, sessions: usize, per_session: usize) -> String {
    let store = SqliteStore::open(&dir.join("load.db"), 2).expect("open the database");
    let store: Arc<dyn ChatStore> = Arc::new(store);
    let mut first = String::new();
    let mut batch = Vec::new();
    for s in 0..sessions {
        let user = UserId::new(if s == 0 { 1 } else { 2 + (s % 1000) as i64 }).expect("user id");
        let session = Session::new(user, format!("Session {s}"), TitleSource::User);
        store.create_session(&session).expect("session");
        if s == 0 {
            first = session.id.to_string();
        }
        for chunk in (0..per_session).collect::<Vec<_>>().chunks(500) {
            let messages = chunk
                .iter()
                .map(|i| {
                    let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
                    ChatMessage::new(
                        role,
                        format!("message {i} of session {s}: some ordinary words of a chat"),
                    )
                })
                .collect();
            batch.push(TurnWrite {
                messages,
                session_id: Some(session.id.clone()),
                ..TurnWrite::default()
            });
            if batch.len() >= 64 {
                for result in store.write_turns(&std::mem::take(&mut batch)) {
                    result.expect("write");
                }
            }
        }
    }
    for result in store.write_turns(&batch) {
        result.expect("write");
    }
    first
}

async fn timed_get(http: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    if let Ok(resp) = http.get(url).header("X-User-ID", "1").send().await {
        let _ = resp.bytes().await;
    }
    started.elapsed()
}

async fn measure(label: &str, sessions: usize, per_session: usize, rows: &mut Vec<serde_json::Value>) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let prepared = Instant::now();
    let session = prepare(dir.path(), sessions, per_session);
    let prepare_s = prepared.elapsed().as_secs_f64();
    let server = Server::start_in(dir, 0, "").await;
    let http = client(2);
    // The first turn loads the history into the session actor; the rest run on it.
    let _ = turn(&http, &server.base, 1, Some(&session), "warm up", Duration::MAX).await;
    let mut turns = Vec::new();
    for _ in 0..REPEAT {
        if let Ok(t) = turn(&http, &server.base, 1, Some(&session), "hello", Duration::MAX).await {
            turns.push(t.total);
        }
    }
    let (mut lists, mut pages) = (Vec::new(), Vec::new());
    for _ in 0..REPEAT {
        lists.push(timed_get(&http, &format!("{}/sessions", server.base)).await);
        pages.push(
            timed_get(
                &http,
                &format!("{}/sessions/{session}/messages?page=1&limit=50", server.base),
            )
            .await,
        );
    }
    let [turn, list, page] = [turns, lists, pages].map(Samples::new);
    let us = |s: &Samples, p: f64| s.pct(p);
    say(&format!(
        "{label:<34} | {:>7.0} / {:>7.0} | {:>6.0} / {:>6.0} | {:>6.0} / {:>6.0}",
        us(&turn, 0.5),
        us(&turn, 0.99),
        us(&list, 0.5),
        us(&list, 0.99),
        us(&page, 0.5),
        us(&page, 0.99)
    ));
    rows.push(json!({
        "case": label, "sessions": sessions, "messages_per_session": per_session,
        "prepare_s": prepare_s,
        "turn_us": {"p50": us(&turn, 0.5), "p99": us(&turn, 0.99)},
        "list_sessions_us": {"p50": us(&list, 0.5), "p99": us(&list, 0.99)},
        "messages_page_us": {"p50": us(&page, 0.5), "p99": us(&page, 0.99)},
    }));
}

/// A turn's cost with `n` more tools on offer (every model call carries the whole list).
async fn measure_tools(n: usize, rows: &mut Vec<serde_json::Value>) {
    let exe = env!("CARGO_BIN_EXE_aichat");
    let extra = format!(
        "[[mcp.servers]]\nname = \"demo\"\ncommand = \"{exe}\"\nargs = [\"mcp-demo\", \"--test-tools\", \"--extra-tools\", \"{n}\"]\n"
    );
    let server = Server::start(0, &extra).await;
    let http = client(2);
    server.wait_for_tools(&http).await;
    let mut session = None;
    let mut turns = Vec::new();
    for _ in 0..REPEAT {
        if let Ok(t) = turn(&http, &server.base, 1, session.as_deref(), "hello", Duration::MAX).await {
            session = Some(t.session_id.clone());
            turns.push(t.total);
        }
    }
    let turn = Samples::new(turns);
    say(&format!(
        "{:<34} | {:>7.0} / {:>7.0} |",
        format!("{n} more tools on offer"),
        turn.pct(0.5),
        turn.pct(0.99)
    ));
    rows.push(json!({"case": format!("{n} more tools"), "tools": n,
        "turn_us": {"p50": turn.pct(0.5), "p99": turn.pct(0.99)}}));
}

pub(crate) async fn scaling(quick: bool, report: &mut Report) {
    say("\n== scaling: a turn and the reads against the size of the stored work (concurrency 1, µs)");
    say("case                               | turn p50 / p99    | sessions p50/p99 | messages p50/p99");
    let mut rows = Vec::new();
    let history: &[usize] = if quick { &[10, 1_000] } else { &[10, 100, 1_000, 10_000] };
    for &n in history {
        measure(&format!("history {n} messages"), 1, n, &mut rows).await;
    }
    let database: &[usize] = if quick {
        &[10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    for &n in database {
        measure(
            &format!("database {n} messages (100 a session)"),
            n / 100,
            100,
            &mut rows,
        )
        .await;
    }
    let tools: &[usize] = if quick { &[10, 1_000] } else { &[10, 100, 1_000] };
    for &n in tools {
        measure_tools(n, &mut rows).await;
    }
    report.insert("scaling", json!(rows));
}

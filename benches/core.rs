//! Criterion micro-benchmarks of the hot paths under one turn: a message round trip to an actor
//! against a plain function call and a tokio channel round trip, appending a turn's messages and
//! events to SQLite, loading a history, pushing an event through a stream buffer to a reader, and
//! encoding an SSE frame. Run: `cargo bench --bench core`.

use std::hint::black_box;

use actix_web_lab::sse;
use actors::ids::{SessionId, StreamId, UserId};
use actors::model::{ChatMessage, Role, Session, StreamMessage, TitleSource};
use actors::storage::{ChatStore, SqliteStore, StoredEvent, TurnWrite};
use actors::stream::StreamBuffer;
use criterion::{Criterion, criterion_group, criterion_main};

#[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
fn storage(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("bench.db"), 2).expect("open");
    let user = UserId::new(1).expect("user");
    let session = Session::new(user, "bench".into(), TitleSource::User);
    store.create_session(&session).expect("session");
    let events: Vec<_> = (1..=16)
        .map(|seq| StoredEvent {
            seq,
            data: "{\"type\":\"message\"}".into(),
        })
        .collect();
    c.bench_function("storage/write_turn (2 messages, 16 events)", |b| {
        b.iter(|| {
            let write = TurnWrite {
                messages: vec![
                    ChatMessage::new(Role::User, "hello"),
                    ChatMessage::new(Role::Assistant, "hi there"),
                ],
                session_id: Some(session.id.clone()),
                ..TurnWrite::default()
            };
            store.write_turn(black_box(&write)).expect("write");
        });
    });
    let history = Session::new(user, "history".into(), TitleSource::User);
    store.create_session(&history).expect("session");
    let write = TurnWrite {
        messages: (0..50)
            .map(|i| ChatMessage::new(Role::User, format!("message {i}")))
            .collect(),
        session_id: Some(history.id.clone()),
        events,
        ..TurnWrite::default()
    };
    store.write_turn(&write).expect("write");
    c.bench_function("storage/load history (50 messages)", |b| {
        b.iter(|| store.list_messages(user, black_box(&history.id), None).expect("load"));
    });
}

#[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
fn streams(c: &mut Criterion) {
    let session = SessionId::from_raw("bench");
    let message = StreamMessage::text(&session, "token ");
    c.bench_function("stream/push one event", |b| {
        let buffer = StreamBuffer::new(StreamId::generate(), UserId::new(1).expect("user"), session.clone());
        b.iter(|| buffer.push(black_box(&message)));
    });
    c.bench_function("sse/encode one event", |b| {
        let data = serde_json::to_string(&message).unwrap_or_default();
        b.iter(|| {
            let event: sse::Event = sse::Data::new(black_box(data.clone())).event("message").id("42").into();
            black_box(event)
        });
    });
}

/// An actor that answers a number with the next one.
struct Echo;

impl actix::Actor for Echo {
    type Context = actix::Context<Self>;
}

#[derive(actix::Message)]
#[rtype(result = "u64")]
struct Next(u64);

impl actix::Handler<Next> for Echo {
    type Result = u64;

    fn handle(&mut self, msg: Next, _: &mut Self::Context) -> u64 {
        msg.0 + 1
    }
}

#[inline(never)]
fn next(n: u64) -> u64 {
    n + 1
}

#[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
fn actors(c: &mut Criterion) {
    let system = actix::System::new();
    c.bench_function("round trip/plain function call", |b| b.iter(|| next(black_box(1))));
    c.bench_function("round trip/tokio mpsc + oneshot to a task", |b| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, tokio::sync::oneshot::Sender<u64>)>(16);
        system.block_on(async {
            actix::spawn(async move {
                while let Some((n, reply)) = rx.recv().await {
                    let _ = reply.send(n + 1);
                }
            });
        });
        b.iter(|| {
            system.block_on(async {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send((black_box(1), reply)).await.expect("send");
                answer.await.expect("answer")
            })
        });
    });
    c.bench_function("round trip/actix actor (same arbiter)", |b| {
        let addr = system.block_on(async { actix::Actor::start(Echo) });
        b.iter(|| system.block_on(async { addr.send(Next(black_box(1))).await.expect("answer") }));
    });
    c.bench_function("round trip/actix actor (other arbiter)", |b| {
        let arbiter = actix::Arbiter::new();
        let addr = system.block_on(async { actix::Actor::start_in_arbiter(&arbiter.handle(), |_| Echo) });
        b.iter(|| system.block_on(async { addr.send(Next(black_box(1))).await.expect("answer") }));
        arbiter.stop();
    });
}

criterion_group!(benches, actors, storage, streams);
criterion_main!(benches);

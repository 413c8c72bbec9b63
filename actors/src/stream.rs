//! Streams: the per-turn event buffer and the hub that finds buffers by id.
//!
//! A turn pushes every `StreamMessage` into its [`StreamBuffer`] and never waits for a reader.
//! Any number of readers subscribe, from the first event or after a given sequence number, and
//! each sees every event in order; a reader that connects late catches up from the buffer.
//! Buffers of finished turns stay in memory for a retention time; after that, and after a
//! restart, the same events come from storage.
//!
//! On a database several nodes share, a stream whose turn runs on another node is *followed*: its
//! buffer is filled from storage whenever that node announces new events (and on a slow poll in
//! case a notice was lost), so readers here get it live too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::ids::{SessionId, StreamId, UserId};
use crate::model::StreamMessage;
#[cfg(test)]
use crate::storage::StreamStatus;
use crate::storage::{StoredEvent, StreamRecord};

/// One event as readers get it: sequence number (from 1), JSON, and whether it ends the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// The SSE `id:`.
    pub seq: u64,
    /// The `StreamMessage` JSON.
    pub data: Arc<str>,
    /// `done` or `error`.
    pub terminal: bool,
}

#[derive(Default)]
struct BufferState {
    events: Vec<Arc<StreamEvent>>,
    finished_at: Option<Instant>,
    /// What the events hold in memory, roughly (their JSON plus a fixed cost each).
    bytes: usize,
}

/// What one event costs besides its JSON: the `StreamEvent` in its `Arc`, the `Arc<str>` header,
/// the allocator's rounding and the vector's slot with its slack. Measured in the soak: with 64
/// the budget counted half of what the buffers held.
const EVENT_OVERHEAD: usize = 128;

/// What a finished buffer costs besides its events: the buffer, its `Arc`, its wake-up channel
/// and its entry (and id) in the hub's map.
const BUFFER_OVERHEAD: usize = 512;

/// The events of one turn, shared by the producing turn and every reader.
pub struct StreamBuffer {
    id: StreamId,
    user_id: UserId,
    session_id: SessionId,
    state: Mutex<BufferState>,
    version: watch::Sender<u64>,
    readers: std::sync::atomic::AtomicUsize,
    /// Set when the turn runs on another node and this buffer follows it from storage.
    remote: Option<Remote>,
}

/// What a followed buffer needs: a wake-up when the running node announces events, and when
/// that announcement was made (for the lag figure).
struct Remote {
    wake: tokio::sync::Notify,
    announced_at_micros: std::sync::atomic::AtomicI64,
}

fn lock(state: &Mutex<BufferState>) -> MutexGuard<'_, BufferState> {
    // A poisoned lock only means a reader panicked mid-read; the events are still consistent.
    crate::sync::lock_unpoisoned(state)
}

impl StreamBuffer {
    /// An empty buffer for a new turn.
    pub fn new(id: StreamId, user_id: UserId, session_id: SessionId) -> Arc<Self> {
        Self::build(id, user_id, session_id, None)
    }

    fn build(id: StreamId, user_id: UserId, session_id: SessionId, remote: Option<Remote>) -> Arc<Self> {
        Arc::new(Self {
            id,
            user_id,
            session_id,
            state: Mutex::new(BufferState::default()),
            version: watch::channel(0).0,
            readers: std::sync::atomic::AtomicUsize::new(0),
            remote,
        })
    }

    /// A buffer that follows a turn running on another node, holding the events stored so far.
    pub fn following(record: &StreamRecord, events: Vec<StoredEvent>) -> Arc<Self> {
        let remote = Remote {
            wake: tokio::sync::Notify::new(),
            announced_at_micros: std::sync::atomic::AtomicI64::new(0),
        };
        let buffer = Self::build(
            record.id.clone(),
            record.user_id,
            record.session_id.clone(),
            Some(remote),
        );
        buffer.append_stored(events);
        buffer
    }

    /// Whether this buffer follows a turn running on another node.
    pub fn is_followed(&self) -> bool {
        self.remote.is_some()
    }

    /// Wakes the follower of this buffer: the running node announced events (at `at_micros`).
    pub fn announce(&self, at_micros: i64) {
        if let Some(remote) = &self.remote {
            remote
                .announced_at_micros
                .store(at_micros, std::sync::atomic::Ordering::Relaxed);
            remote.wake.notify_one();
        }
    }

    /// Waits until the running node announces events, at most `limit`.
    pub async fn announced(&self, limit: Duration) {
        if let Some(remote) = &self.remote {
            let _ = tokio::time::timeout(limit, remote.wake.notified()).await;
        }
    }

    /// When the last announcement this buffer got was made (Unix µs; 0 if none).
    pub fn announced_at_micros(&self) -> i64 {
        self.remote
            .as_ref()
            .map_or(0, |r| r.announced_at_micros.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Appends stored events past the last one held (in order; a terminal one ends the stream)
    /// and wakes the readers. Returns how many were new.
    pub fn append_stored(&self, events: Vec<StoredEvent>) -> usize {
        let (added, last) = {
            let mut state = lock(&self.state);
            if state.finished_at.is_some() {
                return 0;
            }
            let mut added = 0;
            for event in events {
                let after = state.events.last().map_or(0, |e| e.seq);
                if event.seq <= after {
                    continue;
                }
                let terminal = StreamMessage::is_terminal_json(&event.data);
                state.bytes += event.data.len() + EVENT_OVERHEAD;
                state.events.push(Arc::new(StreamEvent {
                    seq: event.seq,
                    data: event.data.into(),
                    terminal,
                }));
                added += 1;
                if terminal {
                    state.finished_at = Some(Instant::now());
                    break;
                }
            }
            (added, state.events.last().map_or(0, |e| e.seq))
        };
        if added > 0 {
            self.version.send_replace(last);
        }
        added
    }

    /// Ends a stream that stopped without its terminal event (the server or the running node
    /// stopped mid-turn) with an `interrupted` error numbered above any id a reader may have seen;
    /// nothing when it has ended.
    pub fn end_interrupted(&self) {
        let seq = {
            let mut state = lock(&self.state);
            if state.finished_at.is_some() {
                return;
            }
            let last = state.events.last().map_or(0, |e| e.seq);
            let note = crate::session::recovery::interrupted_note(&self.session_id);
            let seq = crate::session::recovery::terminal_seq(last);
            state.events.push(Arc::new(StreamEvent {
                seq,
                data: serde_json::to_string(&note).unwrap_or_default().into(),
                terminal: true,
            }));
            state.finished_at = Some(Instant::now());
            seq
        };
        self.version.send_replace(seq);
    }

    /// The sequence number of the last event held (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq_and_terminal().0
    }

    /// A finished buffer rebuilt from storage. A stream left without a terminal event (the server
    /// stopped mid-turn) ends with an `error` event whose code is `interrupted`.
    pub fn from_stored(record: &StreamRecord, events: Vec<StoredEvent>) -> Arc<Self> {
        let buffer = Self::new(record.id.clone(), record.user_id, record.session_id.clone());
        buffer.append_stored(events);
        buffer.end_interrupted();
        buffer
    }

    /// Its id.
    pub fn id(&self) -> &StreamId {
        &self.id
    }

    /// Its owner.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// Its session.
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.last_seq_and_terminal().0 + 1
    }

    fn last_seq_and_terminal(&self) -> (u64, bool) {
        let state = lock(&self.state);
        state.events.last().map_or((0, false), |e| (e.seq, e.terminal))
    }

    /// Appends an event and wakes every reader. Returns it in its stored form. Events pushed
    /// after a terminal one are ignored.
    pub fn push(&self, message: &StreamMessage) -> Option<StoredEvent> {
        let data = serde_json::to_string(message).unwrap_or_else(|_| {
            // Serialising our own types cannot fail; keep the stream well-formed anyway.
            r#"{"type":"error","session_id":"","error":"unencodable event","code":"internal"}"#.to_owned()
        });
        let terminal = message.is_terminal();
        let seq = {
            let mut state = lock(&self.state);
            if state.finished_at.is_some() {
                return None;
            }
            let seq = state.events.last().map_or(1, |e| e.seq + 1);
            state.bytes += data.len() + EVENT_OVERHEAD;
            state.events.push(Arc::new(StreamEvent {
                seq,
                data: data.as_str().into(),
                terminal,
            }));
            if terminal {
                state.finished_at = Some(Instant::now());
            }
            seq
        };
        self.version.send_replace(seq);
        Some(StoredEvent { seq, data })
    }

    /// Whether the stream has ended.
    pub fn is_finished(&self) -> bool {
        lock(&self.state).finished_at.is_some()
    }

    /// When it finished, and what it holds in memory; `None` while it runs.
    fn finished_and_bytes(&self) -> Option<(Instant, usize)> {
        let state = lock(&self.state);
        state.finished_at.map(|at| (at, state.bytes + BUFFER_OVERHEAD))
    }

    /// The events after `after_seq` (a copy of the pointers; cheap) and whether the stream had
    /// ended, read under one lock: read apart, a terminal event pushed between the two reads would
    /// be lost to a live reader.
    fn events_after_or_end(&self, after_seq: u64) -> (Vec<Arc<StreamEvent>>, bool) {
        let state = lock(&self.state);
        let start = state.events.partition_point(|e| e.seq <= after_seq);
        (state.events[start..].to_vec(), state.finished_at.is_some())
    }

    /// Readers connected right now.
    pub fn readers(&self) -> usize {
        self.readers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A reader that gets every event after `after_seq`, then live ones, until the end.
    pub fn subscribe(self: &Arc<Self>, after_seq: u64) -> Subscription {
        self.readers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Subscription {
            buffer: Arc::clone(self),
            after_seq,
            version: self.version.subscribe(),
        }
    }
}

/// One reader of a stream.
pub struct Subscription {
    buffer: Arc<StreamBuffer>,
    after_seq: u64,
    version: watch::Receiver<u64>,
}

impl Subscription {
    /// The next events (at least one), or `None` after the terminal event has been read.
    pub async fn next_batch(&mut self) -> Option<Vec<Arc<StreamEvent>>> {
        loop {
            self.version.borrow_and_update();
            let (events, finished) = self.buffer.events_after_or_end(self.after_seq);
            if let Some(last) = events.last() {
                self.after_seq = last.seq;
                return Some(events);
            }
            if finished {
                return None;
            }
            if self.version.changed().await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.buffer.readers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Finds live and recently finished streams by id. Finished streams stay for a retention time
/// and within a byte budget (the oldest go first); storage serves them afterwards.
pub struct StreamHub {
    streams: Mutex<HashMap<StreamId, Arc<StreamBuffer>>>,
    retention: Duration,
    budget_bytes: usize,
}

impl Default for StreamHub {
    fn default() -> Self {
        Self::new(Duration::from_secs(600), 64 * 1024 * 1024)
    }
}

impl StreamHub {
    /// A hub that keeps finished streams for `retention`, and at most `budget_bytes` of them.
    pub fn new(retention: Duration, budget_bytes: usize) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            retention,
            budget_bytes,
        }
    }

    /// How long finished streams stay.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    fn map(&self) -> MutexGuard<'_, HashMap<StreamId, Arc<StreamBuffer>>> {
        crate::sync::lock_unpoisoned(&self.streams)
    }

    /// Registers a buffer.
    pub fn insert(&self, buffer: Arc<StreamBuffer>) {
        self.map().insert(buffer.id().clone(), buffer);
    }

    /// Registers a buffer unless one with its id is there already; returns the one registered and
    /// whether it is `buffer`.
    pub fn insert_if_absent(&self, buffer: Arc<StreamBuffer>) -> (Arc<StreamBuffer>, bool) {
        let mut map = self.map();
        match map.get(buffer.id()) {
            Some(existing) => (Arc::clone(existing), false),
            None => {
                map.insert(buffer.id().clone(), Arc::clone(&buffer));
                (buffer, true)
            }
        }
    }

    /// Wakes the follower of a stream another node runs (it announced events at `at_micros`).
    pub fn announce(&self, id: &StreamId, at_micros: i64) {
        if let Some(buffer) = self.get(id) {
            buffer.announce(at_micros);
        }
    }

    /// Wakes every follower (notices may have been missed).
    pub fn announce_all(&self) {
        for buffer in self.map().values() {
            buffer.announce(0);
        }
    }

    /// The streams whose turn runs on this node now.
    pub fn running_here(&self) -> Vec<StreamId> {
        self.map()
            .values()
            .filter(|b| !b.is_followed() && !b.is_finished())
            .map(|b| b.id().clone())
            .collect()
    }

    /// A buffer by id, whoever owns it (callers check the owner).
    pub fn get(&self, id: &StreamId) -> Option<Arc<StreamBuffer>> {
        self.map().get(id).cloned()
    }

    /// Forgets a buffer.
    pub fn remove(&self, id: &StreamId) {
        self.map().remove(id);
    }

    /// Forgets every buffer of a session (after it was deleted).
    pub fn remove_session(&self, session_id: &SessionId) {
        self.map().retain(|_, b| b.session_id() != session_id);
    }

    /// Forgets finished buffers older than the retention time, then the oldest finished ones
    /// until the rest fit the byte budget; returns how many went. Running streams always stay.
    pub fn sweep(&self) -> usize {
        let deadline = Instant::now().checked_sub(self.retention);
        let mut map = self.map();
        let before = map.len();
        let mut finished: Vec<(Instant, usize, StreamId)> = Vec::new();
        map.retain(|id, b| match b.finished_and_bytes() {
            None => true,
            Some((at, _)) if deadline.is_some_and(|d| at < d) => false,
            Some((at, bytes)) => {
                finished.push((at, bytes, id.clone()));
                true
            }
        });
        let mut held: usize = finished.iter().map(|(_, bytes, _)| bytes).sum();
        if held > self.budget_bytes {
            finished.sort_by_key(|(at, _, _)| *at);
            for (_, bytes, id) in finished {
                if held <= self.budget_bytes {
                    break;
                }
                map.remove(&id);
                held -= bytes;
            }
        }
        before - map.len()
    }

    /// Streams of this user whose turn is still running on this node.
    pub fn running_for(&self, user: UserId) -> usize {
        self.map()
            .values()
            .filter(|b| b.user_id() == user && !b.is_followed() && !b.is_finished())
            .count()
    }

    /// Streams whose turn is still running on this node.
    pub fn running(&self) -> usize {
        self.map()
            .values()
            .filter(|b| !b.is_followed() && !b.is_finished())
            .count()
    }

    /// Streams of other nodes' turns followed here, still running.
    pub fn followed(&self) -> usize {
        self.map()
            .values()
            .filter(|b| b.is_followed() && !b.is_finished())
            .count()
    }

    /// Streams in memory.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no stream is in memory.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> Arc<StreamBuffer> {
        StreamBuffer::new(StreamId::generate(), UserId::new(1).unwrap(), SessionId::from_raw("s"))
    }

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "a plain test thread: the streams must finish at distinct instants"
    )]
    fn finished_streams_leave_memory_oldest_first_past_the_byte_budget() {
        let session = SessionId::from_raw("s");
        let finished = |text: &str| {
            let b = buffer();
            b.push(&StreamMessage::text(&session, text));
            b.push(&StreamMessage::done(&session));
            b
        };
        let one = finished(&"x".repeat(1000));
        let size = one.finished_and_bytes().map_or(0, |(_, bytes)| bytes);
        let hub = StreamHub::new(Duration::from_secs(3600), 2 * size + size / 2);
        let running = buffer();
        running.push(&StreamMessage::text(&session, "y".repeat(5000)));
        hub.insert(Arc::clone(&running));
        hub.insert(Arc::clone(&one));
        std::thread::sleep(Duration::from_millis(2));
        let two = finished(&"x".repeat(1000));
        hub.insert(Arc::clone(&two));
        std::thread::sleep(Duration::from_millis(2));
        let three = finished(&"x".repeat(1000));
        hub.insert(Arc::clone(&three));
        assert_eq!(hub.sweep(), 1);
        assert!(hub.get(one.id()).is_none(), "the oldest finished stream went");
        assert!(hub.get(two.id()).is_some() && hub.get(three.id()).is_some());
        assert!(hub.get(running.id()).is_some(), "a running stream always stays");
        assert_eq!(hub.sweep(), 0);
    }

    /// A terminal event pushed on another thread while a reader checks for news is never lost
    /// (the reader once saw "no events" and then "finished", and ended without the last event).
    #[test]
    fn a_live_reader_never_misses_the_terminal_event() {
        let session = SessionId::from_raw("s");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        for _ in 0..3000 {
            let buffer = buffer();
            buffer.push(&StreamMessage::text(&session, "a"));
            let mut reader = buffer.subscribe(1);
            let pusher = {
                let (buffer, session) = (Arc::clone(&buffer), session.clone());
                std::thread::spawn(move || buffer.push(&StreamMessage::done(&session)))
            };
            let last = runtime.block_on(async {
                let mut last = None;
                while let Some(batch) = tokio::time::timeout(Duration::from_secs(5), reader.next_batch())
                    .await
                    .unwrap()
                {
                    last = batch.last().cloned();
                }
                last
            });
            pusher.join().unwrap();
            assert!(
                last.is_some_and(|e| e.terminal),
                "the reader ended without the terminal event"
            );
        }
    }

    #[actix_rt::test]
    async fn late_and_concurrent_readers_see_every_event_in_order() {
        let buffer = buffer();
        let session = SessionId::from_raw("s");
        let mut early = buffer.subscribe(0);
        buffer.push(&StreamMessage::text(&session, "a"));
        buffer.push(&StreamMessage::text(&session, "b"));
        let first = early.next_batch().await.unwrap();
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        buffer.push(&StreamMessage::done(&session));
        assert!(buffer.push(&StreamMessage::text(&session, "ignored")).is_none());
        let rest = early.next_batch().await.unwrap();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].terminal);
        assert!(early.next_batch().await.is_none());

        let mut late = buffer.subscribe(0);
        let all = late.next_batch().await.unwrap();
        assert_eq!(all.len(), 3);
        let mut resumed = buffer.subscribe(2);
        assert_eq!(resumed.next_batch().await.unwrap()[0].seq, 3);
    }

    #[actix_rt::test]
    async fn a_waiting_reader_wakes_on_push() {
        let buffer = buffer();
        let mut reader = buffer.subscribe(0);
        let producer = Arc::clone(&buffer);
        let wait = actix_rt::spawn(async move { reader.next_batch().await });
        tokio::task::yield_now().await;
        producer.push(&StreamMessage::text(&SessionId::from_raw("s"), "x"));
        let got = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.unwrap()[0].seq, 1);
    }

    #[test]
    fn stored_streams_without_an_end_are_marked_interrupted() {
        let record = StreamRecord {
            id: StreamId::generate(),
            user_id: UserId::new(1).unwrap(),
            session_id: SessionId::from_raw("s"),
            status: StreamStatus::Interrupted,
            created_at: chrono::Utc::now(),
        };
        let text = serde_json::to_string(&StreamMessage::text(&record.session_id, "partial")).unwrap();
        let buffer = StreamBuffer::from_stored(&record, vec![StoredEvent { seq: 1, data: text }]);
        let events = buffer.events_after_or_end(0).0;
        assert_eq!(events.len(), 2);
        assert!(events[1].terminal);
        assert!(events[1].data.contains("\"code\":\"interrupted\""));
        assert!(buffer.is_finished());
    }
}

//! Progress of tool calls in flight. A call that wants its server's `notifications/progress`
//! registers a sink under its connection and the request's progress token (rmcp numbers them per
//! connection); the connection's notification handler hands each notice to the sink of its token.
//! The registration ends with the call. A notice that arrives before its call registered (the
//! first moments after the request is sent) is dropped: progress is information, not data.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use rmcp::model::ProgressToken;

/// One `notifications/progress` of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressNote {
    /// Progress so far.
    pub progress: f64,
    /// The total, when the server knows it.
    pub total: Option<f64>,
    /// What the server says it is doing.
    pub message: Option<String>,
}

/// Where a call's progress goes.
pub type ProgressSink = Arc<dyn Fn(ProgressNote) + Send + Sync>;

/// A connection (server name, its place in the pool, its generation) and a token.
type Key = (String, usize, u64, String);

/// A connection: server name, its place in the pool, its generation.
pub type Connection<'a> = (&'a str, usize, u64);

static ROUTES: LazyLock<Mutex<HashMap<Key, ProgressSink>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn key((server, index, generation): Connection<'_>, token: &ProgressToken) -> Key {
    let token = serde_json::to_string(&token.0).unwrap_or_default();
    (server.to_owned(), index, generation, token)
}

/// Registered while alive.
pub struct Registration(Key);

impl Drop for Registration {
    fn drop(&mut self) {
        crate::sync::lock_unpoisoned(&ROUTES).remove(&self.0);
    }
}

/// Sends the progress of the request `token` on this connection to `sink` until dropped.
pub fn register(connection: Connection<'_>, token: &ProgressToken, sink: ProgressSink) -> Registration {
    let key = key(connection, token);
    crate::sync::lock_unpoisoned(&ROUTES).insert(key.clone(), sink);
    Registration(key)
}

/// Hands a notice to its call's sink, if the call still listens.
pub fn deliver(connection: Connection<'_>, token: &ProgressToken, note: ProgressNote) {
    let sink = crate::sync::lock_unpoisoned(&ROUTES)
        .get(&key(connection, token))
        .cloned();
    if let Some(sink) = sink {
        sink(note);
    }
}

//! Progress of tool calls in flight. A call that wants its server's `notifications/progress`
//! registers a sink under its connection's process-wide link number and the request's progress
//! token (rmcp numbers them per connection); the connection's notification handler hands each
//! notice to the sink of its token.
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

/// A connection's link number and a token.
type Key = (u64, ProgressToken);

static LINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh link number for a new connection (unique in the process, whatever server or pool).
pub fn new_link() -> u64 {
    LINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

static ROUTES: LazyLock<Mutex<HashMap<Key, ProgressSink>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Registered while alive.
pub struct Registration(Key);

impl Drop for Registration {
    fn drop(&mut self) {
        crate::sync::lock_unpoisoned(&ROUTES).remove(&self.0);
    }
}

/// Sends the progress of the request `token` on this connection to `sink` until dropped.
pub fn register(link: u64, token: &ProgressToken, sink: ProgressSink) -> Registration {
    let key = (link, token.clone());
    crate::sync::lock_unpoisoned(&ROUTES).insert(key.clone(), sink);
    Registration(key)
}

/// Hands a notice to its call's sink, if the call still listens.
pub fn deliver(link: u64, token: &ProgressToken, note: ProgressNote) {
    let sink = crate::sync::lock_unpoisoned(&ROUTES)
        .get(&(link, token.clone()))
        .cloned();
    if let Some(sink) = sink {
        sink(note);
    }
}

//! Questions a tool's server asks while its call runs (an `elicitation/create` request of the
//! 2025-11-25 era): the server holds the call open for the answer, so the turn waits too. The
//! running turn stores and announces each question, then lists it here; the session actor hands
//! the person's answer to the turn, which stores it before the tool gets it (an answer another
//! node took is stored there, and comes here by `NOTIFY`).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::SessionError;
use crate::elicitation::Question;

/// The questions a session's running turn waits on, by elicitation id.
#[derive(Default)]
pub(crate) struct LiveQuestions(Mutex<HashMap<String, Waiting>>);

/// One question waiting for its answer.
pub(crate) struct Waiting {
    /// What was asked (the answer is checked against it).
    pub question: Question,
    /// Where the turn takes answers.
    pub answers: mpsc::UnboundedSender<LiveAnswer>,
}

/// An answer on its way to the turn.
pub(crate) struct LiveAnswer {
    /// The elicitation.
    pub request_id: String,
    /// The answer as the server is sent it (checked).
    pub sent: Value,
    /// Told once the answer is stored (or why it was not taken); `None`: another node stored it.
    pub stored: Option<oneshot::Sender<Result<(), SessionError>>>,
}

impl LiveQuestions {
    /// Lists a question (after it is stored, before it is announced).
    pub(crate) fn insert(&self, request_id: String, waiting: Waiting) {
        crate::sync::lock_unpoisoned(&self.0).insert(request_id, waiting);
    }

    /// Takes a question out to answer it.
    pub(crate) fn take(&self, request_id: &str) -> Option<Waiting> {
        crate::sync::lock_unpoisoned(&self.0).remove(request_id)
    }

    /// Forgets questions whose calls ended.
    pub(crate) fn forget<'a>(&self, request_ids: impl IntoIterator<Item = &'a String>) {
        let mut waiting = crate::sync::lock_unpoisoned(&self.0);
        for id in request_ids {
            waiting.remove(id);
        }
    }
}

//! Questions a tool's server asks while its call runs (an `elicitation/create` request of the
//! 2025-11-25 era): the server holds the call open for the answer, so the turn waits too. The
//! running turn stores and announces each question, then lists it here. Whoever takes the
//! person's answer stores it (`StoreAnswer`: once, while the stream runs), then the session actor
//! hands it to the turn, which gives it to the tool: this node's answers directly, another
//! node's after its `NOTIFY`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::mpsc;

use super::SessionError;
use crate::approval::{ApprovalRecord, ApprovalStatus};
use crate::elicitation::ElicitAnswer;
use crate::ids::UserId;
use crate::storage::{GetApproval, Storage, StoreAnswer};

/// The questions a session's running turn waits on, by elicitation id.
#[derive(Default)]
pub(crate) struct LiveQuestions(Mutex<HashMap<String, Waiting>>);

/// One question waiting for its answer.
pub(crate) struct Waiting {
    /// The elicitation as stored (its question; the answer is checked against it).
    pub record: ApprovalRecord,
    /// Where the turn takes answers.
    pub answers: mpsc::UnboundedSender<LiveAnswer>,
}

/// A stored answer on its way to the turn.
pub(crate) struct LiveAnswer {
    /// The elicitation.
    pub request_id: String,
    /// The answer as the server is sent it.
    pub sent: Value,
}

/// Checks `answer` against the question `record` asks now and stores it (once, while the asking
/// stream runs; on a shared store the node that runs it is told). Returns the answer as the
/// server is sent it, or `None` when another answer came first or the stream has ended.
pub(crate) async fn store_answer(
    storage: &Storage,
    mut record: ApprovalRecord,
    answer: &ElicitAnswer,
    user: UserId,
) -> Result<Option<Value>, SessionError> {
    let now = crate::model::now();
    match record.effective_status(now) {
        ApprovalStatus::Pending => {}
        ApprovalStatus::Expired => return Err(SessionError::ApprovalExpired),
        _ => return Err(SessionError::AlreadyDecided),
    }
    let sent = record
        .answer(answer, &format!("user:{user}"), now)
        .ok_or(SessionError::AlreadyDecided)?
        .map_err(SessionError::AnswerInvalid)?;
    let stored = storage.ask(StoreAnswer { answered: record }).await?;
    if stored {
        metrics::counter!("aichat_elicitations_total", "outcome" => answer.action.as_str()).increment(1);
    }
    Ok(stored.then_some(sent))
}

/// Hands the turn the answer stored for `request_id` (taken here, or on another node).
pub(crate) async fn forward_stored(storage: Storage, user: UserId, request_id: String, waiting: Waiting) {
    let read = GetApproval {
        user,
        request_id: request_id.clone(),
    };
    let stored = storage.ask(read).await.ok().flatten();
    let sent = stored.and_then(|record| {
        record
            .calls
            .into_iter()
            .find_map(|c| c.input?.answers.into_values().next())
    });
    match sent {
        Some(sent) => {
            let _ = waiting.answers.send(LiveAnswer { request_id, sent });
        }
        None => tracing::debug!(%request_id, "no stored answer to hand on (the question lapsed)"),
    }
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

//! The turn loop: provider stream → tool calls scattered at once and gathered in call order →
//! provider again → … → `done`. It runs as a future spawned on the session actor and never waits
//! for a reader: events go to the stream buffer and, at every round and at the end, to storage.

use std::sync::Arc;

use chrono::Utc;

use super::SessionDeps;
use crate::ids::{SessionId, StreamId};
use crate::model::{ChatMessage, Role, StreamMessage};
use crate::provider::{CompletionRequest, ProviderError, ProviderEvent, Purpose};
use crate::storage::{StoredEvent, StreamStatus, TurnWrite, WriteTurn};
use crate::stream::StreamBuffer;
use crate::tools::{execute_all, truncate_for_model};

/// Why a turn failed.
#[derive(Debug, thiserror::Error)]
enum TurnError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("storage failed: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

impl TurnError {
    fn code(&self) -> &'static str {
        match self {
            TurnError::Provider(err) => err.code(),
            TurnError::Storage(_) => "storage_unavailable",
        }
    }
}

/// What a finished turn hands back to its session actor.
pub(crate) struct TurnOutcome {
    /// Messages stored by this turn (after the user message), for the in-memory context.
    pub messages: Vec<ChatMessage>,
    /// Whether the turn ended with `done`.
    pub succeeded: bool,
}

/// One turn in flight.
pub(crate) struct Turn {
    deps: Arc<SessionDeps>,
    session_id: SessionId,
    stream_id: StreamId,
    history: Vec<ChatMessage>,
    buffer: Arc<StreamBuffer>,
    unsaved_events: Vec<StoredEvent>,
    unsaved_messages: Vec<ChatMessage>,
    saved_messages: Vec<ChatMessage>,
}

impl Turn {
    pub(crate) fn new(
        deps: Arc<SessionDeps>,
        session_id: SessionId,
        history: Vec<ChatMessage>,
        buffer: Arc<StreamBuffer>,
    ) -> Self {
        Self {
            deps,
            session_id,
            stream_id: buffer.id().clone(),
            history,
            buffer,
            unsaved_events: Vec::new(),
            unsaved_messages: Vec::new(),
            saved_messages: Vec::new(),
        }
    }

    fn emit(&mut self, message: &StreamMessage) {
        if let Some(event) = self.buffer.push(message) {
            self.unsaved_events.push(event);
        }
    }

    fn record(&mut self, message: ChatMessage) {
        self.history.push(message.clone());
        self.unsaved_messages.push(message);
    }

    async fn save(&mut self, finish: Option<StreamStatus>, extra: Option<StoredEvent>) -> Result<(), TurnError> {
        let messages = std::mem::take(&mut self.unsaved_messages);
        let mut events = std::mem::take(&mut self.unsaved_events);
        events.extend(extra);
        let write = TurnWrite {
            new_stream: None,
            messages: messages.clone(),
            session_id: Some(self.session_id.clone()),
            stream_id: Some(self.stream_id.clone()),
            events,
            finish,
        };
        self.deps.storage.ask(WriteTurn { write }).await?;
        self.saved_messages.extend(messages);
        Ok(())
    }

    /// Runs the turn to its terminal event and returns what it stored.
    pub(crate) async fn run(mut self) -> TurnOutcome {
        let result = self.rounds().await;
        let (terminal, status) = match &result {
            Ok(()) => (StreamMessage::done(&self.session_id), StreamStatus::Done),
            Err(err) => {
                tracing::warn!(session_id = %self.session_id, stream_id = %self.stream_id, code = err.code(), "turn failed");
                (
                    StreamMessage::error(&self.session_id, err.code(), err.to_string()),
                    StreamStatus::Failed,
                )
            }
        };
        if result.is_err() {
            // A failed round keeps nothing of its partial answer in the context.
            self.unsaved_messages.clear();
        }
        // Store the answer and the terminal event before readers see the terminal event, so a
        // client that reads history right after `done` finds the answer there.
        let terminal_event = StoredEvent {
            seq: self.buffer.events_after(0).last().map_or(1, |e| e.seq + 1),
            data: serde_json::to_string(&terminal).unwrap_or_default(),
        };
        let succeeded = match self.save(Some(status), Some(terminal_event)).await {
            Ok(()) => {
                self.buffer.push(&terminal);
                result.is_ok()
            }
            Err(err) => {
                tracing::error!(session_id = %self.session_id, error = %err, "could not store the end of a turn");
                self.buffer
                    .push(&StreamMessage::error(&self.session_id, err.code(), err.to_string()));
                false
            }
        };
        TurnOutcome {
            messages: self.saved_messages,
            succeeded,
        }
    }

    fn request(&self) -> CompletionRequest {
        let mut messages = Vec::with_capacity(self.history.len() + 1);
        if let Some(prompt) = &self.deps.settings.system_prompt {
            let now = Utc::now();
            let context = format!(
                "{prompt}\n\nCURRENT CONTEXT:\n- Current UTC time: {}",
                now.format("%Y-%m-%d %H:%M:%S")
            );
            messages.push(ChatMessage::new(Role::System, context));
        }
        messages.extend(self.history.iter().cloned());
        CompletionRequest {
            messages,
            tools: self.deps.tools.tools(),
            purpose: Purpose::Chat,
        }
    }

    async fn rounds(&mut self) -> Result<(), TurnError> {
        let deps = Arc::clone(&self.deps);
        let settings = &deps.settings;
        let max_rounds = settings.max_tool_rounds;
        let mut tool_rounds = 0;
        loop {
            let mut events = deps.provider.stream(self.request());
            let mut text = String::new();
            let mut calls = Vec::new();
            let mut usage = None;
            let mut first = true;
            loop {
                let wait = if first {
                    settings.first_token_timeout
                } else {
                    settings.chunk_gap_timeout
                };
                let event = match tokio::time::timeout(wait, events.recv()).await {
                    Err(_) => {
                        let what = if first { "first token" } else { "gap between chunks" };
                        return Err(ProviderError::Timeout(what.into()).into());
                    }
                    Ok(None) => return Err(ProviderError::Unavailable.into()),
                    Ok(Some(event)) => event?,
                };
                first = false;
                match event {
                    ProviderEvent::Text(delta) => {
                        self.emit(&StreamMessage::text(&self.session_id, delta.clone()));
                        text.push_str(&delta);
                    }
                    ProviderEvent::ToolCalls(more) => calls.extend(more),
                    ProviderEvent::Usage(u) => usage = Some(u),
                    ProviderEvent::Done => break,
                }
            }
            if !calls.is_empty() && tool_rounds == max_rounds {
                // Past the limit the calls are not run, and not stored as calls: a history with
                // unanswered tool calls is one no vendor accepts.
                let note = format!(
                    "\n\nStopped: the model asked for more tools after {max_rounds} tool round(s) (max_tool_rounds)."
                );
                self.emit(&StreamMessage::text(&self.session_id, note.clone()));
                text.push_str(&note);
                calls.clear();
            }
            let mut answer = ChatMessage::new(Role::Assistant, text);
            answer.tool_calls = calls.clone();
            answer.usage = usage;
            self.record(answer);
            if calls.is_empty() {
                return Ok(());
            }
            tool_rounds += 1;
            let executions = execute_all(&deps.tools, &calls).await;
            self.emit(&StreamMessage::tool_execution(&self.session_id, executions.clone()));
            for execution in executions {
                let for_model = truncate_for_model(&execution.result, settings.max_tool_output_chars);
                self.record(ChatMessage::tool_result(execution, for_model));
            }
            self.save(None, None).await?;
        }
    }
}

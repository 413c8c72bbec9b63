//! The turn loop: provider stream → tool calls scattered at once and gathered in call order →
//! provider again → … → `done`. It runs as a future spawned on the session actor and never waits
//! for a reader: events go to the stream buffer and to storage (at every round, every half second
//! of streaming, and at the end). A stop signal (cancel, shutdown) ends it at the next await with
//! its partial answer stored and marked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::SessionDeps;
use crate::approval::{
    ApprovalRecord, ApprovalStatus, BatchCall, CallOutcome, CallState, ELICITATION, denied, outcome_unknown,
};
use crate::elicitation::{InputReply, InputState, MAX_ROUNDS, Question};
use crate::ids::{SessionId, StreamId};
use crate::model::{ApprovalRequestView, ChatMessage, Role, StreamMessage, ToolCall, ToolExecution};
use crate::provider::{CompletionRequest, ProviderError, ProviderEvent, Purpose};
use crate::storage::{Fence, ListGrants, StoredEvent, StreamStatus, TurnWrite};
use crate::stream::StreamBuffer;
use crate::tools::{CallHooks, ProgressNote, Ran, execute_all, keep_head_and_tail};

/// A tool call's progress reaches readers at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Streamed events are stored at least every `SessionSettings::flush_every`, so a crash loses
/// little (and readers on other nodes see them soon), or after this many unsaved events.
const FLUSH_EVENTS: usize = 64;
// A crash loses at most the unsaved events (and one note); recovery numbers its terminal event
// above them all.
const _: () = assert!((FLUSH_EVENTS as u64) + 1 < super::recovery::UNSEEN_GAP);

/// Why a turn was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The person cancelled it.
    Cancelled,
    /// The server is shutting down.
    Interrupted,
}

impl StopReason {
    fn code(self) -> &'static str {
        match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// Why a turn failed.
#[derive(Debug, thiserror::Error)]
enum TurnError {
    /// A provider failed: the person reads which one and why, in a few words.
    #[error("{provider}: {source}")]
    Provider { provider: String, source: ProviderError },
    #[error("storage failed: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("the turn was cancelled")]
    Cancelled,
    #[error("the server stopped before this answer was complete")]
    Interrupted,
}

impl TurnError {
    fn code(&self) -> &'static str {
        match self {
            TurnError::Provider { source, .. } => source.code(),
            TurnError::Storage(_) => crate::storage::StorageError::CODE,
            TurnError::Cancelled => StopReason::Cancelled.code(),
            TurnError::Interrupted => StopReason::Interrupted.code(),
        }
    }

    fn stopped(reason: StopReason) -> Self {
        match reason {
            StopReason::Cancelled => TurnError::Cancelled,
            StopReason::Interrupted => TurnError::Interrupted,
        }
    }
}

/// What a finished turn hands back to its session actor.
pub(crate) struct TurnOutcome {
    /// Messages stored by this turn (after the user message), for the in-memory context.
    pub messages: Vec<ChatMessage>,
    /// Whether the turn ended with `done`.
    pub succeeded: bool,
    /// The approval request the turn ended with, if it did.
    pub pending: Option<ApprovalRecord>,
}

/// One turn in flight.
pub(crate) struct Turn {
    deps: Arc<SessionDeps>,
    session_id: SessionId,
    stream_id: StreamId,
    history: Vec<Arc<ChatMessage>>,
    buffer: Arc<StreamBuffer>,
    stop: watch::Receiver<Option<StopReason>>,
    /// Text of the current round so far (kept when the turn is stopped).
    partial: String,
    unsaved_events: Vec<StoredEvent>,
    unsaved_messages: Vec<ChatMessage>,
    saved_messages: Vec<ChatMessage>,
    last_flush: Instant,
    /// An approval request to store with the next write.
    new_approval: Option<ApprovalRecord>,
    /// The approval request this turn stored and announced (the session then waits on it).
    requested: Option<ApprovalRecord>,
    /// The decided approval whose approved calls this turn runs (stored `running` before they
    /// are sent); its outcomes go with the write of the round.
    running: Option<ApprovalRecord>,
    /// Outcomes to store with the next write.
    outcomes: Option<ApprovalRecord>,
    /// Where the turn starts.
    start: Option<TurnStart>,
    /// The provider the request named (else the default).
    provider: Option<String>,
    /// Time spent waiting on providers and tools (the rest is the server's own overhead).
    waited: Duration,
    /// The session lease every write of the turn carries (a shared store).
    fence: Option<Fence>,
    /// The questions asked during this turn's calls, shared with the session actor.
    live: Arc<super::live::LiveQuestions>,
}

type EventReceiver = tokio::sync::mpsc::Receiver<Result<ProviderEvent, ProviderError>>;

/// How a turn begins.
pub enum TurnStart {
    /// With the person's message (already stored).
    Message,
    /// With a decided approval batch (already settled in storage, its approved calls marked
    /// `running`): its calls run (or are denied) first.
    Approved {
        /// The settled record.
        record: Box<ApprovalRecord>,
    },
}

impl Turn {
    pub(crate) fn new(
        deps: Arc<SessionDeps>,
        session_id: SessionId,
        history: Vec<Arc<ChatMessage>>,
        buffer: Arc<StreamBuffer>,
        stop: watch::Receiver<Option<StopReason>>,
        start: TurnStart,
        provider: Option<String>,
    ) -> Self {
        Self {
            deps,
            session_id,
            stream_id: buffer.id().clone(),
            history,
            buffer,
            stop,
            partial: String::new(),
            unsaved_events: Vec::new(),
            unsaved_messages: Vec::new(),
            saved_messages: Vec::new(),
            last_flush: Instant::now(),
            new_approval: None,
            requested: None,
            running: None,
            outcomes: None,
            start: Some(start),
            provider,
            waited: Duration::ZERO,
            fence: None,
            live: Arc::default(),
        }
    }

    /// The questions asked during the turn's calls are listed in `live` (the session actor's).
    pub(crate) fn answering(mut self, live: Arc<super::live::LiveQuestions>) -> Self {
        self.live = live;
        self
    }

    /// The turn's writes carry `fence` (its session's lease on a shared store).
    pub(crate) fn fenced(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// A progress notice of call `i` of `calls`, as a `tool_progress` event.
    fn emit_progress(&mut self, calls: &[ToolCall], i: usize, note: ProgressNote) {
        if let Some(call) = calls.get(i) {
            let event = StreamMessage::tool_progress(&self.session_id, call, note.progress, note.total, note.message);
            self.emit(&event);
        }
    }

    fn emit(&mut self, message: &StreamMessage) {
        if let Some(event) = self.buffer.push(message) {
            self.unsaved_events.push(event);
        }
    }

    /// Stores everything unsaved together with `message`'s event, then pushes the event to
    /// readers: what it announces (an approval request, tool results) is durable before any
    /// client can act on it.
    async fn announce(&mut self, message: &StreamMessage) -> Result<(), TurnError> {
        let event = self.next_event(message);
        self.save(None, Some(event)).await?;
        self.buffer.push(message);
        Ok(())
    }

    /// `message` as the stream's next event, stored before the buffer gets it (only the turn
    /// pushes to its buffer, so the number holds).
    fn next_event(&self, message: &StreamMessage) -> StoredEvent {
        StoredEvent {
            seq: self.buffer.next_seq(),
            data: serde_json::to_string(message).unwrap_or_default(),
        }
    }

    fn record(&mut self, message: ChatMessage) {
        self.history.push(Arc::new(message.clone()));
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
            new_approval: self.new_approval.take(),
            settle_approval: None,
            new_grants: Vec::new(),
            call_outcomes: self.outcomes.take(),
            fence: self.fence.clone(),
        };
        self.deps.storage.write(write).await?;
        self.saved_messages.extend(messages);
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Resolves when the turn is asked to stop.
    async fn stopped(stop: &mut watch::Receiver<Option<StopReason>>) -> StopReason {
        match stop.wait_for(Option::is_some).await {
            Ok(reason) => reason.unwrap_or(StopReason::Cancelled),
            // The session actor is gone: nobody can read the result any more.
            Err(_) => StopReason::Interrupted,
        }
    }

    /// Runs the turn to its terminal event and returns what it stored. The turn is boxed and the
    /// branches a waiting turn is not in (tool rounds, approvals, saves) are boxed when taken, so
    /// the future a turn keeps while it waits on its model stays about 1 KiB (it was 5 KiB).
    pub(crate) async fn run(mut self: Box<Self>) -> TurnOutcome {
        metrics::counter!("aichat_turns_started_total").increment(1);
        let started = Instant::now();
        let result = self.rounds().await;
        let total = started.elapsed();
        // The server's own share of the turn: what was not spent waiting on a provider or tools.
        let overhead = total.saturating_sub(self.waited);
        metrics::histogram!("aichat_turn_overhead_seconds").record(overhead.as_secs_f64());
        let pending = self.requested.take();
        let (terminal, status) = match &result {
            Ok(()) => (StreamMessage::done(&self.session_id), StreamStatus::Done),
            Err(err) => {
                tracing::warn!(session_id = %self.session_id, stream_id = %self.stream_id, code = err.code(), "turn ended early");
                let status = match err {
                    TurnError::Cancelled => StreamStatus::Cancelled,
                    TurnError::Interrupted => StreamStatus::Interrupted,
                    TurnError::Provider { .. } | TurnError::Storage(_) => StreamStatus::Failed,
                };
                (
                    StreamMessage::error(&self.session_id, err.code(), err.to_string()),
                    status,
                )
            }
        };
        match &result {
            Ok(()) => {}
            // A stopped turn keeps what the person already saw, marked as partial.
            Err(TurnError::Cancelled | TurnError::Interrupted) => {
                self.unsaved_messages
                    .retain(|m| m.role != Role::Assistant || m.tool_calls.is_empty());
                let partial = std::mem::take(&mut self.partial);
                self.unsaved_messages
                    .extend(super::recovery::partial_answer(partial, status));
            }
            // A failed round keeps nothing of its partial answer in the context.
            Err(TurnError::Provider { .. } | TurnError::Storage(_)) => self.unsaved_messages.clear(),
        }
        // Store the answer and the terminal event before readers see the terminal event, so a
        // client that reads history right after `done` finds the answer there.
        let terminal_event = self.next_event(&terminal);
        let succeeded = match Box::pin(self.save(Some(status), Some(terminal_event))).await {
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
        let outcome = match &result {
            Ok(()) if pending.as_ref().is_some_and(ApprovalRecord::is_elicitation) => "elicitation_requested",
            Ok(()) if pending.is_some() => "approval_requested",
            Ok(()) => "done",
            Err(err) => err.code(),
        };
        metrics::counter!("aichat_turns_finished_total", "outcome" => outcome).increment(1);
        // The request exists only if its write went through.
        let pending = pending.filter(|_| succeeded);
        TurnOutcome {
            messages: self.saved_messages,
            succeeded,
            pending,
        }
    }

    fn request(&self) -> CompletionRequest {
        let mut messages = Vec::with_capacity(self.history.len() + 1);
        let settings = self.deps.settings.get();
        if let Some(prompt) = settings.system_prompt.as_ref() {
            let now = Utc::now();
            let context = format!(
                "{prompt}\n\nCURRENT CONTEXT:\n- Current UTC time: {}",
                now.format("%Y-%m-%d %H:%M:%S")
            );
            messages.push(Arc::new(ChatMessage::new(Role::System, context)));
        }
        // `tool_approval` messages are for the person; no vendor accepts that role.
        messages.extend(self.history.iter().filter(|m| m.role != Role::ToolApproval).cloned());
        CompletionRequest {
            messages,
            tools: self.deps.tools.tools(),
            purpose: Purpose::Chat,
        }
    }

    async fn rounds(&mut self) -> Result<(), TurnError> {
        let deps = Arc::clone(&self.deps);
        let settings = deps.settings.get();
        let max_rounds = settings.max_tool_rounds;
        let mut stop = self.stop.clone();
        let mut tool_rounds = 0;
        if let Some(TurnStart::Approved { record }) = self.start.take() {
            let batch = record.calls.clone();
            self.running = Some(*record);
            Box::pin(self.execute_batch(&batch, &mut stop)).await?;
            if self.requested.is_some() {
                // A tool asked the person: the turn ends on the question.
                return Ok(());
            }
            tool_rounds = 1;
        }
        loop {
            // Dropping `events` (on return) aborts the provider's upstream request.
            let (mut events, first_event, answering) = self.open_stream(&mut stop).await?;
            let failed = |source| TurnError::Provider {
                provider: answering.clone(),
                source,
            };
            let mut pending = Some(first_event);
            self.partial.clear();
            let mut calls = Vec::new();
            let mut usage = None;
            loop {
                let event = match pending.take() {
                    Some(event) => event,
                    None => {
                        let waiting = Instant::now();
                        let next = tokio::select! {
                            biased;
                            reason = Self::stopped(&mut stop) => return Err(TurnError::stopped(reason)),
                            next = tokio::time::timeout(settings.chunk_gap_timeout, events.recv()) => next,
                        };
                        self.waited += waiting.elapsed();
                        match next {
                            Err(_) => return Err(failed(ProviderError::Timeout("gap between chunks".into()))),
                            Ok(None) => return Err(failed(ProviderError::Unavailable)),
                            Ok(Some(event)) => event.map_err(failed)?,
                        }
                    }
                };
                match event {
                    ProviderEvent::Text(delta) => {
                        self.emit(&StreamMessage::text(&self.session_id, delta.clone()));
                        self.partial.push_str(&delta);
                        if self.unsaved_events.len() >= FLUSH_EVENTS
                            || self.last_flush.elapsed() >= settings.flush_every
                        {
                            Box::pin(self.save(None, None)).await?;
                        }
                    }
                    ProviderEvent::ToolCalls(more) => calls.extend(more),
                    ProviderEvent::Usage(u) => usage = Some(u),
                    ProviderEvent::Done => break,
                }
            }
            drop(events);
            let mut text = std::mem::take(&mut self.partial);
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
            let batch = self.classify(&calls).await?;
            if batch.iter().any(|c| c.state == CallState::Pending) {
                return Box::pin(self.ask_approval(batch)).await;
            }
            Box::pin(self.execute_batch(&batch, &mut stop)).await?;
            if self.requested.is_some() {
                return Ok(());
            }
        }
    }

    /// Starts the model call on the first provider of the chain that produces a first event. A
    /// provider that fails before its first event hands over to the next one (the fallback chain);
    /// once output has reached the client there is no switching.
    async fn open_stream(
        &mut self,
        stop: &mut watch::Receiver<Option<StopReason>>,
    ) -> Result<(EventReceiver, ProviderEvent, String), TurnError> {
        let deps = Arc::clone(&self.deps);
        let chain = deps.providers.get().chain(self.provider.as_deref());
        let request = self.request();
        let mut last = TurnError::Provider {
            provider: "no provider".into(),
            source: ProviderError::Unavailable,
        };
        for (i, provider) in chain.iter().enumerate() {
            let waiting = Instant::now();
            let mut events = provider.stream(request.clone());
            let next = tokio::select! {
                biased;
                reason = Self::stopped(stop) => return Err(TurnError::stopped(reason)),
                next = tokio::time::timeout(deps.settings.get().first_token_timeout, events.recv()) => next,
            };
            self.waited += waiting.elapsed();
            let err = match next {
                Ok(Some(Ok(event))) => {
                    deps.providers.get().report(provider.name(), true);
                    metrics::histogram!("aichat_time_to_first_token_seconds", "provider" => provider.name().to_owned())
                        .record(waiting.elapsed().as_secs_f64());
                    return Ok((events, event, provider.name().to_owned()));
                }
                Ok(Some(Err(err))) => err,
                Ok(None) => ProviderError::Unavailable,
                Err(_) => ProviderError::Timeout("first token".into()),
            };
            deps.providers.get().report(provider.name(), false);
            metrics::counter!("aichat_provider_errors_total", "provider" => provider.name().to_owned(), "code" => err.code())
                .increment(1);
            let another_may_help = !matches!(
                err,
                ProviderError::ContextLengthExceeded | ProviderError::InvalidRequest(_)
            );
            if another_may_help && i + 1 < chain.len() {
                tracing::warn!(
                    provider = provider.name(),
                    code = err.code(),
                    "provider failed before its first token; trying the next"
                );
                last = TurnError::Provider {
                    provider: provider.name().to_owned(),
                    source: err,
                };
                continue;
            }
            return Err(TurnError::Provider {
                provider: provider.name().to_owned(),
                source: err,
            });
        }
        Err(last)
    }

    /// Applies the policy and the user's grants to each call of a batch.
    async fn classify(&self, calls: &[ToolCall]) -> Result<Vec<BatchCall>, TurnError> {
        let settings = self.deps.settings.get();
        let policy = &settings.approval;
        let specs = self.deps.tools.tools();
        let granted: Vec<String> = if policy.may_ask(calls, &specs) {
            let user = self.buffer.user_id();
            let grants = self.deps.storage.ask(ListGrants { user }).await?;
            grants
                .into_iter()
                .filter(|g| g.session_id.as_ref().is_none_or(|s| *s == self.session_id))
                .map(|g| g.tool)
                .collect()
        } else {
            Vec::new()
        };
        Ok(policy.classify(calls, &specs, &granted))
    }

    /// A new pending request (`<prefix>_<uuid>`) of this turn for `calls`, that waits `waits`.
    fn pending_record(&self, prefix: &str, calls: Vec<BatchCall>, waits: Duration) -> ApprovalRecord {
        let now = crate::model::now();
        let waits = chrono::Duration::from_std(waits).unwrap_or(chrono::Duration::MAX);
        ApprovalRecord {
            request_id: crate::ids::prefixed_id(prefix),
            user_id: self.buffer.user_id(),
            session_id: self.session_id.clone(),
            stream_id: self.stream_id.clone(),
            calls,
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now.checked_add_signed(waits).unwrap_or(now),
            decided_by: None,
            decided_at: None,
        }
    }

    /// Stores a pending approval for the batch, then announces it with `tool_approval_request`
    /// (a client may decide it the instant it arrives); the turn then ends.
    async fn ask_approval(&mut self, batch: Vec<BatchCall>) -> Result<(), TurnError> {
        let waits = Duration::from_secs(self.deps.settings.get().approval.expiry_secs);
        let record = self.pending_record("approval", batch, waits);
        let pending = record.pending_calls();
        let mut message = ChatMessage::new(
            Role::ToolApproval,
            format!(
                "🔧 The assistant wants to execute {} tool(s). Please approve or deny the request.",
                pending.len()
            ),
        );
        message.tool_calls = pending.clone();
        message.approval_request = Some(ApprovalRequestView {
            request_id: record.request_id.clone(),
            tool_calls: pending.clone(),
            status: None,
            processed: None,
        });
        self.record(message);
        let announcement = StreamMessage::approval_request(&self.session_id, &record.request_id, pending);
        self.new_approval = Some(record.clone());
        self.announce(&announcement).await?;
        self.requested = Some(record);
        Ok(())
    }

    /// Runs the approved calls of a batch at once and gives the others their denial, all in call
    /// order; stores the round (with the outcomes of an approval's calls, if any). The calls are
    /// durable before any is sent (the model's `tool_calls` message, or the approval marked
    /// `running`), so a crash leaves their trace and never runs them again. A call whose server
    /// needs the person's input pauses the batch on an elicitation (what finished keeps its
    /// result); one that only wants its state back is sent again at once.
    async fn execute_batch(
        &mut self,
        batch: &[BatchCall],
        stop: &mut watch::Receiver<Option<StopReason>>,
    ) -> Result<(), TurnError> {
        let deps = Arc::clone(&self.deps);
        let mut batch = batch.to_vec();
        loop {
            let runnable: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].ready_to_run()).collect();
            if runnable.is_empty() {
                break;
            }
            let calls: Vec<ToolCall> = runnable.iter().map(|&i| batch[i].call.clone()).collect();
            let replies: Vec<Option<InputReply>> = runnable
                .iter()
                .map(|&i| batch[i].input.as_ref().and_then(InputState::reply))
                .collect();
            if !self.unsaved_messages.is_empty() {
                self.save(None, None).await?;
            }
            let ran = Box::pin(self.run_calls(&batch, &calls, &replies, stop)).await?;
            if let Some(mut record) = self.running.take() {
                let failed = |call: &ToolCall| {
                    ran.iter()
                        .any(|r| matches!(r, Ran::Done(e) if e.id == call.id && e.error.is_some()))
                };
                record.finish_running(|call| {
                    if failed(call) {
                        CallOutcome::Failed
                    } else {
                        CallOutcome::Done
                    }
                });
                self.outcomes = Some(record);
            }
            let max_stored = deps.settings.get().max_stored_tool_output_chars;
            for (&i, ran) in runnable.iter().zip(ran) {
                let entry = &mut batch[i];
                match ran {
                    Ran::Done(mut execution) => {
                        let outcome = if execution.error.is_some() { "error" } else { "ok" };
                        let tool = execution.tool_name.clone();
                        metrics::counter!("aichat_tool_calls_total", "tool" => tool.clone(), "outcome" => outcome)
                            .increment(1);
                        metrics::histogram!("aichat_tool_call_duration_seconds", "tool" => tool)
                            .record(execution.duration_ms as f64 / 1000.0);
                        if execution.result.len() > max_stored {
                            execution.result = keep_head_and_tail(&execution.result, max_stored);
                        }
                        entry.result = Some(execution);
                        entry.input = None;
                    }
                    Ran::NeedsInput {
                        questions,
                        request_state,
                    } => {
                        let round = entry.input.as_ref().map_or(0, |input| input.round) + 1;
                        if round > MAX_ROUNDS {
                            let why = format!("its server asked for input more than {MAX_ROUNDS} times");
                            entry.result = Some(crate::approval::ended_without_result(&entry.call, why));
                            entry.input = None;
                        } else {
                            entry.input = Some(InputState {
                                questions,
                                request_state,
                                answers: Default::default(),
                                round,
                                live: false,
                            });
                        }
                    }
                }
            }
        }
        if batch.iter().any(|c| c.input.is_some()) {
            return Box::pin(self.ask_person(batch)).await;
        }
        let executions: Vec<ToolExecution> = batch
            .iter()
            .map(|c| match (&c.state, &c.result) {
                (_, Some(result)) => result.clone(),
                (CallState::Approved { .. }, None) => outcome_unknown(&c.call, "the turn ended"),
                (CallState::Denied { by }, None) => denied(&c.call, by),
                (CallState::Pending, None) => denied(&c.call, "nobody (no decision)"),
            })
            .collect();
        let announcement = StreamMessage::tool_execution(&self.session_id, executions.clone());
        for execution in executions {
            let for_model = keep_head_and_tail(&execution.result, deps.settings.get().max_tool_output_chars);
            self.record(ChatMessage::tool_result(execution, for_model));
        }
        self.announce(&announcement).await
    }

    /// Sends `calls` (the ready calls of `batch`) at once and gathers how each ended, in call
    /// order, passing on their progress. Stopped, every call of the batch gets its result in
    /// history (the ones sent may have acted), and the turn ends.
    async fn run_calls(
        &mut self,
        batch: &[BatchCall],
        calls: &[ToolCall],
        replies: &[Option<InputReply>],
        stop: &mut watch::Receiver<Option<StopReason>>,
    ) -> Result<Vec<Ran>, TurnError> {
        let deps = Arc::clone(&self.deps);
        // Dropping the calls (on stop) sends `notifications/cancelled` to their servers.
        let waiting = Instant::now();
        // Progress notices of the calls, each call's at most every PROGRESS_EVERY.
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
        // Questions servers ask during the calls, and the person's answers to them.
        let (ask_tx, mut ask_rx) = tokio::sync::mpsc::unbounded_channel();
        let (answer_tx, mut answer_rx) = tokio::sync::mpsc::unbounded_channel();
        // The questions asked, by elicitation id: where each one's answer goes.
        let mut asked: HashMap<String, oneshot::Sender<Value>> = HashMap::new();
        let expiry = deps.settings.get().elicitation_expiry;
        let hooks = |i: usize| {
            let (progress_tx, ask_tx) = (progress_tx.clone(), ask_tx.clone());
            CallHooks {
                progress: Some(Arc::new(move |note| {
                    let _ = progress_tx.send((i, note));
                })),
                asker: Some(Arc::new(move |question| {
                    let (answer, answered) = oneshot::channel();
                    let queued = ask_tx.send((i, question, answer));
                    Box::pin(async move {
                        let cancel = serde_json::json!({"action": "cancel"});
                        if queued.is_err() {
                            return cancel;
                        }
                        // Unanswered in time, the question counts as `cancel`.
                        match tokio::time::timeout(expiry, answered).await {
                            Ok(Ok(answer)) => answer,
                            _ => cancel,
                        }
                    })
                })),
            }
        };
        let mut running = std::pin::pin!(execute_all(&deps.tools, calls, replies, hooks));
        let mut pacer = super::pacer::ProgressPacer::new(calls.len(), PROGRESS_EVERY);
        let ran = loop {
            let wake = pacer.next_due();
            tokio::select! {
            biased;
            reason = Self::stopped(stop) => {
                for c in batch {
                    let execution = match (&c.state, &c.result) {
                        (_, Some(result)) => result.clone(),
                        (CallState::Approved { .. }, None) => outcome_unknown(&c.call, "the turn was stopped"),
                        (CallState::Denied { by }, None) => denied(&c.call, by),
                        (CallState::Pending, None) => denied(&c.call, "nobody (no decision)"),
                    };
                    let for_model = keep_head_and_tail(&execution.result, deps.settings.get().max_tool_output_chars);
                    self.record(ChatMessage::tool_result(execution, for_model));
                }
                if let Some(mut record) = self.running.take() {
                    record.finish_running(|_| CallOutcome::Unknown);
                    self.outcomes = Some(record);
                }
                self.live.forget(asked.keys());
                return Err(TurnError::stopped(reason));
            }
            ran = &mut running => {
                // Notices already here (not those the server's handler has yet to pass on: progress
                // is for watching, the results follow).
                while let Ok((i, note)) = progress_rx.try_recv() {
                    pacer.keep(i, note);
                }
                for (i, note) in pacer.drain() {
                    self.emit_progress(calls, i, note);
                }
                break ran;
            }
            Some((i, note)) = progress_rx.recv() => {
                if let Some(note) = pacer.offer(i, note, Instant::now()) {
                    self.emit_progress(calls, i, note);
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now))), if wake.is_some() => {
                for (i, note) in pacer.due(Instant::now()) {
                    self.emit_progress(calls, i, note);
                }
            }
            Some((i, question, answer)) = ask_rx.recv() => {
                let Some(call) = calls.get(i) else { continue };
                let request_id = Box::pin(self.ask_during_call(batch, call, question, &answer_tx)).await?;
                asked.insert(request_id, answer);
            }
            Some(answer) = answer_rx.recv() => {
                // Stored by whoever took it: the tool gets it.
                let answer: super::live::LiveAnswer = answer;
                if let Some(to_tool) = asked.remove(&answer.request_id) {
                    let _ = to_tool.send(answer.sent);
                }
            }
            }
        };
        // Questions still open lapse with their calls.
        self.live.forget(asked.keys());
        self.waited += waiting.elapsed();
        Ok(ran)
    }

    /// A server asks the person something while `call` runs (it holds the call open for the
    /// answer): the question is stored with a snapshot of the batch, listed for the session
    /// actor, and only then announced with `elicitation_request`; the turn goes on waiting.
    /// Returns its id.
    async fn ask_during_call(
        &mut self,
        batch: &[BatchCall],
        call: &ToolCall,
        question: Question,
        answers: &tokio::sync::mpsc::UnboundedSender<super::live::LiveAnswer>,
    ) -> Result<String, TurnError> {
        let mut calls = batch.to_vec();
        if let Some(asking) = calls.iter_mut().find(|c| c.call.id == call.id) {
            asking.input = Some(InputState {
                questions: vec![question.clone()],
                request_state: None,
                answers: Default::default(),
                round: 0,
                live: true,
            });
        }
        let waits = self.deps.settings.get().elicitation_expiry;
        let record = self.pending_record(ELICITATION, calls, waits);
        let announcement =
            StreamMessage::elicitation_request(&self.session_id, &record.request_id, call, question.clone());
        self.new_approval = Some(record.clone());
        let event = self.next_event(&announcement);
        self.save(None, Some(event)).await?;
        let request_id = record.request_id.clone();
        self.live.insert(
            request_id.clone(),
            super::live::Waiting {
                record,
                answers: answers.clone(),
            },
        );
        self.buffer.push(&announcement);
        metrics::counter!("aichat_elicitations_total", "outcome" => "asked").increment(1);
        Ok(request_id)
    }

    /// Stores an elicitation for the batch (what finished keeps its result; the first question
    /// nobody answered is the one asked), then announces it with `elicitation_request`; the turn
    /// then ends, as it does on an approval.
    async fn ask_person(&mut self, batch: Vec<BatchCall>) -> Result<(), TurnError> {
        let waits = self.deps.settings.get().elicitation_expiry;
        let record = self.pending_record(ELICITATION, batch, waits);
        let Some((i, question)) = record.asking() else {
            return Ok(());
        };
        let announcement = StreamMessage::elicitation_request(
            &self.session_id,
            &record.request_id,
            &record.calls[i].call,
            question.clone(),
        );
        metrics::counter!("aichat_elicitations_total", "outcome" => "asked").increment(1);
        self.new_approval = Some(record.clone());
        self.announce(&announcement).await?;
        self.requested = Some(record);
        Ok(())
    }
}

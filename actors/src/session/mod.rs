//! The session actor: one per chat session, started on demand by the registry. It owns the
//! session's history (the model's context), rebuilt from storage when it starts, and at most one
//! turn in flight. It stops itself when idle; the next message starts a fresh one from storage.

mod error;
mod live;
mod messages;
mod pacer;
pub mod recovery;
mod settings;
#[cfg(test)]
mod tests;
mod title;
mod turn;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use futures::FutureExt;

use crate::approval::{ApprovalRecord, ApprovalStatus, Remember};
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{ChatMessage, Role, StreamMessage};
use crate::storage::{
    Fence, LeaseToken, ListMessages, NewGrant, PendingApproval, StorageError, StreamRecord, StreamStatus, TurnWrite,
};
use crate::stream::StreamBuffer;
use crate::tools::keep_head_and_tail;

pub use error::SessionError;
pub(crate) use live::store_answer;
pub use messages::{
    AnsweredElsewhere, Decide, Forget, Resolution, Shutdown, StartTurn, StopIfIdle, StopTurn, TurnStarted,
};
pub use settings::{SessionDeps, SessionSettings};
pub use title::clean_title;
pub use turn::StopReason;

enum Load {
    Pending,
    Ready,
    Failed(String),
}

struct RunningTurn {
    stream: Arc<StreamBuffer>,
    handle: Option<SpawnHandle>,
    stop: tokio::sync::watch::Sender<Option<StopReason>>,
    /// The lease this turn holds (on a shared store).
    fence: Option<Fence>,
}

/// The session actor.
pub struct SessionActor {
    id: SessionId,
    user: UserId,
    deps: Arc<SessionDeps>,
    /// Told when this actor stops (the registry).
    registry: Recipient<Forget>,
    history: Vec<Arc<ChatMessage>>,
    load: Load,
    turn: Option<RunningTurn>,
    /// The approval request the session waits on, if any.
    pending: Option<ApprovalRecord>,
    /// Counts finished turns: a decision that arrives while the turn that asked is still ending
    /// waits on it.
    turns_ended: tokio::sync::watch::Sender<u64>,
    last_active: Instant,
    /// The session's lease token as of the history this actor holds (a shared store): the next
    /// turn claims the one after it, and finds out so when another node ran a turn meanwhile.
    lease_token: u64,
    /// Questions servers ask during the running turn's calls, waiting for the person.
    live: Arc<live::LiveQuestions>,
}

impl SessionActor {
    /// A session actor for a session known to exist and belong to `user`.
    pub fn new(id: SessionId, user: UserId, deps: Arc<SessionDeps>, registry: Recipient<Forget>) -> Self {
        Self {
            id,
            user,
            deps,
            registry,
            history: Vec::new(),
            load: Load::Pending,
            turn: None,
            pending: None,
            turns_ended: tokio::sync::watch::channel(0).0,
            last_active: Instant::now(),
            lease_token: 0,
            live: Arc::default(),
        }
    }

    /// Rebuilds the history and the pending approval from storage before any message is handled.
    fn load_from_storage(&mut self, ctx: &mut Context<Self>) {
        let storage = self.deps.storage.clone();
        let load = ListMessages {
            user: self.user,
            id: self.id.clone(),
            page: None,
        };
        let pending = PendingApproval {
            user: self.user,
            session: self.id.clone(),
        };
        let token = LeaseToken {
            session_id: self.id.clone(),
        };
        // `wait`: no message is handled before the context is rebuilt from storage.
        ctx.wait(
            async move {
                // The token first: a turn another node stores after this read makes the next
                // claim stale (and this copy is read again), never silently missed.
                let token = if storage.is_shared() {
                    storage.ask(token).await?
                } else {
                    0
                };
                let history = storage.ask(load).await?;
                let pending = storage.ask(pending).await?;
                Ok::<_, StorageError>(history.map(|h| (h, pending, token)))
            }
            .into_actor(self)
            .map(|loaded, act, ctx| match loaded {
                Ok(Some((history, pending, token))) => {
                    act.history = history.into_iter().map(Arc::new).collect();
                    // A question asked during a call lapsed with it: nothing waits on it.
                    act.pending = pending.filter(|p| !p.is_live());
                    act.lease_token = token;
                    act.load = Load::Ready;
                }
                Ok(None) => {
                    act.load = Load::Failed("session not found".into());
                    ctx.stop();
                }
                Err(err) => {
                    tracing::error!(session_id = %act.id, error = %err, "could not load session history");
                    act.load = Load::Failed(err.to_string());
                    ctx.stop();
                }
            }),
        );
    }

    /// For a session created just now: its history is empty and nothing is pending, so the actor
    /// skips the load from storage (two reads on the first turn's path).
    pub fn created(mut self) -> Self {
        self.load = Load::Ready;
        self
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if matches!(self.load, Load::Pending) {
            self.load_from_storage(ctx);
        }
        let idle = self.deps.settings.get().idle_timeout;
        ctx.run_interval(idle.max(Duration::from_millis(200)) / 2, move |act, ctx| {
            if act.turn.is_none() && act.last_active.elapsed() >= idle {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.registry.do_send(Forget {
            session_id: self.id.clone(),
            addr: ctx.address(),
        });
        if let Some(turn) = self.turn.take() {
            // The turn's future is dropped with the actor: end its stream, count it, record why.
            metrics::counter!("aichat_turns_finished_total", "outcome" => "cancelled").increment(1);
            let note = StreamMessage::error(
                &self.id,
                "cancelled",
                "The turn was cancelled because the session was closed.",
            );
            if let Some(event) = turn.stream.push(&note) {
                let storage = self.deps.storage.clone();
                let write = TurnWrite {
                    stream_id: Some(turn.stream.id().clone()),
                    events: vec![event],
                    finish: Some(StreamStatus::Failed),
                    fence: turn.fence.clone(),
                    ..TurnWrite::default()
                };
                actix_rt::spawn(async move {
                    if let Err(err) = storage.write(write).await {
                        tracing::warn!(error = %err, "could not record a cancelled turn");
                    }
                });
            }
        }
    }
}

impl SessionActor {
    /// Starts a turn: stores the stream row and `prefix` messages (and settles `settle` with its
    /// `grants`) in one transaction, then spawns the turn. Replies once stored.
    fn begin(
        &mut self,
        prefix: Vec<ChatMessage>,
        settle: Option<ApprovalRecord>,
        grants: Vec<NewGrant>,
        start: turn::TurnStart,
        provider: Option<String>,
    ) -> ResponseActFuture<Self, Result<TurnStarted, SessionError>> {
        self.last_active = Instant::now();
        if let Load::Failed(reason) = &self.load {
            return Box::pin(fut::ready(Err(SessionError::Unavailable(reason.clone()))));
        }
        if self.turn.is_some() {
            return Box::pin(fut::ready(Err(SessionError::Busy)));
        }
        let stream_id = StreamId::generate();
        let buffer = StreamBuffer::new(stream_id.clone(), self.user, self.id.clone());
        let (stop, stop_rx) = tokio::sync::watch::channel(None);
        let claim = self.deps.storage.is_shared().then(|| Fence {
            session_id: self.id.clone(),
            token: self.lease_token + 1,
            claim: true,
            admit: matches!(start, turn::TurnStart::Message),
        });
        let held = claim.clone().map(|fence| Fence {
            claim: false,
            admit: false,
            ..fence
        });
        self.turn = Some(RunningTurn {
            stream: Arc::clone(&buffer),
            handle: None,
            stop,
            fence: held.clone(),
        });
        // The session's pending approval (if any) is settled by this turn.
        let pending_before = self.pending.take();
        let write = TurnWrite {
            new_stream: Some(StreamRecord {
                id: stream_id.clone(),
                user_id: self.user,
                session_id: self.id.clone(),
                status: StreamStatus::Running,
                created_at: Utc::now(),
            }),
            messages: prefix.clone(),
            session_id: Some(self.id.clone()),
            stream_id: Some(stream_id.clone()),
            settle_approval: settle,
            new_grants: grants,
            fence: claim,
            ..TurnWrite::default()
        };
        let storage = self.deps.storage.clone();
        Box::pin(async move { storage.write(write).await }.into_actor(self).map(
            move |stored, act, ctx| {
                if let Err(err) = stored {
                    act.turn = None;
                    // Nothing was stored: the request is still pending.
                    act.pending = pending_before;
                    return Err(match err {
                        StorageError::Conflict(_) => SessionError::AlreadyDecided,
                        StorageError::Busy => SessionError::Busy,
                        StorageError::Limited { reason, retry_after } => {
                            SessionError::TooManyTurns { reason, retry_after }
                        }
                        StorageError::Stale(reason) => {
                            // Another node changed the session since this copy was read: the
                            // caller asks a fresh actor, which reads it again.
                            tracing::debug!(session_id = %act.id, %reason, "session copy is stale");
                            ctx.stop();
                            SessionError::Stale
                        }
                        other => SessionError::Storage(other),
                    });
                }
                if let Some(fence) = &held {
                    act.lease_token = fence.token;
                }
                act.deps.hub.insert(Arc::clone(&buffer));
                let first_exchange = act.history.is_empty();
                act.history.extend(prefix.into_iter().map(Arc::new));
                let turn = turn::Turn::new(
                    Arc::clone(&act.deps),
                    act.id.clone(),
                    act.history.clone(),
                    Arc::clone(&buffer),
                    stop_rx,
                    start,
                    provider,
                )
                .fenced(held)
                .answering(Arc::clone(&act.live));
                let work = AssertUnwindSafe(Box::new(turn).run()).catch_unwind();
                let handle = ctx.spawn(work.into_actor(act).map(move |outcome, act, ctx| {
                    act.turn = None;
                    act.last_active = Instant::now();
                    act.turns_ended.send_modify(|n| *n += 1);
                    match outcome {
                        Ok(outcome) => {
                            act.history.extend(outcome.messages.into_iter().map(Arc::new));
                            act.pending = outcome.pending;
                            if !outcome.succeeded {
                                // A failed turn may not have settled the request it started from:
                                // storage knows whether one is still pending.
                                act.reload_pending(ctx);
                            }
                            if first_exchange && outcome.succeeded {
                                act.generate_title(ctx);
                            }
                        }
                        Err(_) => {
                            tracing::error!(session_id = %act.id, "turn panicked; the session actor restarts from storage");
                            ctx.stop();
                        }
                    }
                }));
                if let Some(turn) = act.turn.as_mut() {
                    turn.handle = Some(handle);
                }
                Ok(TurnStarted { session_id: act.id.clone(), stream_id, stream: buffer })
            },
        ))
    }

    /// Refuses, before anything is stored, files the answering provider cannot read (PDFs for a
    /// vendor without document input).
    fn readable(
        &self,
        provider: Option<&str>,
        attachments: &[crate::attachment::Attachment],
    ) -> Result<(), SessionError> {
        if attachments.is_empty() {
            return Ok(());
        }
        let Some(first) = self.deps.providers.get().chain(provider).into_iter().next() else {
            return Ok(());
        };
        match attachments
            .iter()
            .find(|a| a.kind() == crate::attachment::AttachmentKind::Pdf && !first.reads_pdf())
        {
            Some(a) => Err(SessionError::AttachmentUnreadable {
                provider: first.name().to_owned(),
                filename: a.filename.clone(),
                mime_type: a.mime_type.clone(),
            }),
            None => Ok(()),
        }
    }

    fn reload_pending(&mut self, ctx: &mut Context<Self>) {
        let storage = self.deps.storage.clone();
        let query = PendingApproval {
            user: self.user,
            session: self.id.clone(),
        };
        ctx.spawn(
            async move { storage.ask(query).await }
                .into_actor(self)
                .map(|found, act, _| {
                    if let Ok(pending) = found
                        && act.turn.is_none()
                    {
                        act.pending = pending.filter(|p| !p.is_live());
                    }
                }),
        );
    }

    /// Settles the pending approval without running anything (a new message came instead of a
    /// decision, or it expired): every call gets a denied result, so the history stays valid.
    fn abandon_pending(&mut self) -> (Vec<ChatMessage>, Option<ApprovalRecord>) {
        let Some(mut record) = self.pending.clone() else {
            return (Vec::new(), None);
        };
        let max = self.deps.settings.get().max_tool_output_chars;
        let results = record
            .abandon(crate::model::now())
            .into_iter()
            .map(|execution| {
                let for_model = keep_head_and_tail(&execution.result, max);
                ChatMessage::tool_result(execution, for_model)
            })
            .collect();
        (results, Some(record))
    }
}

impl Handler<StartTurn> for SessionActor {
    type Result = ResponseActFuture<Self, Result<TurnStarted, SessionError>>;

    fn handle(&mut self, msg: StartTurn, _: &mut Self::Context) -> Self::Result {
        if self.turn.is_some() {
            return Box::pin(fut::ready(Err(SessionError::Busy)));
        }
        if let Err(err) = self.readable(msg.provider.as_deref(), &msg.attachments) {
            return Box::pin(fut::ready(Err(err)));
        }
        let (mut prefix, settle) = self.abandon_pending();
        let mut message = ChatMessage::new(Role::User, msg.text);
        message.attachments = msg.attachments;
        prefix.push(message);
        self.begin(prefix, settle, Vec::new(), turn::TurnStart::Message, msg.provider)
    }
}

impl Handler<Decide> for SessionActor {
    type Result = ResponseActFuture<Self, Result<TurnStarted, SessionError>>;

    fn handle(&mut self, msg: Decide, _: &mut Self::Context) -> Self::Result {
        if let Resolution::Elicitation(answer) = &msg.decision
            && let Some(waiting) = self.live.take(&msg.request_id)
        {
            return self.answer_during_call(msg.request_id, answer, waiting);
        }
        if msg.during_call {
            // Not asked by a call running here: on a shared store its turn may run on another
            // node; else its call has ended and the question lapsed with it.
            let refusal = if self.deps.storage.is_shared() {
                SessionError::Elsewhere
            } else {
                SessionError::ApprovalExpired
            };
            return Box::pin(fut::ready(Err(refusal)));
        }
        if self.turn.is_some() {
            // The request was announced (and stored) by the turn that is still ending: the
            // decision is taken once that turn has finished (the caller's timeout bounds the wait).
            let mut ended = self.turns_ended.subscribe();
            return Box::pin(async move { ended.changed().await.is_ok() }.into_actor(self).then(
                move |ended, act, _| -> Self::Result {
                    if ended && act.turn.is_none() {
                        act.decide(msg)
                    } else {
                        Box::pin(fut::ready(Err(SessionError::Busy)))
                    }
                },
            ));
        }
        self.decide(msg)
    }
}

impl SessionActor {
    /// Applies a decision (or an answer) to the pending request and starts the continuation turn.
    fn decide(&mut self, msg: Decide) -> ResponseActFuture<Self, Result<TurnStarted, SessionError>> {
        let Some(mut record) = self.pending.clone().filter(|p| p.request_id == msg.request_id) else {
            // Storage says pending: an elicitation no turn waits on was asked during a call that
            // has ended (it lapsed with the call).
            let refusal = match msg.decision {
                Resolution::Elicitation(_) => SessionError::ApprovalExpired,
                Resolution::Approval(_) => SessionError::AlreadyDecided,
            };
            if self.deps.storage.is_shared() {
                return self.stale_or(refusal);
            }
            return Box::pin(fut::ready(Err(refusal)));
        };
        let now = crate::model::now();
        if record.effective_status(now) == ApprovalStatus::Expired {
            return Box::pin(fut::ready(Err(SessionError::ApprovalExpired)));
        }
        let decision = match msg.decision {
            Resolution::Approval(decision) if !record.is_elicitation() => decision,
            Resolution::Elicitation(answer) if record.is_elicitation() => {
                return match self.answer(record, &answer, now) {
                    Ok(record) => self.begin(
                        Vec::new(),
                        Some(record.clone()),
                        Vec::new(),
                        turn::TurnStart::Approved {
                            record: Box::new(record),
                        },
                        None,
                    ),
                    Err(err) => Box::pin(fut::ready(Err(err))),
                };
            }
            _ => return Box::pin(fut::ready(Err(SessionError::ApprovalNotFound))),
        };
        let person = format!("user:{}", self.user);
        let granted = record.decide(&decision, &person, now);
        metrics::counter!("aichat_approvals_total", "outcome" => record.status.as_str()).increment(1);
        metrics::histogram!("aichat_approval_wait_seconds")
            .record((now - record.created_at).num_milliseconds().max(0) as f64 / 1000.0);
        let scope = match decision.remember {
            Remember::Session => Some(self.id.clone()),
            Remember::User | Remember::None => None,
        };
        let grants = granted
            .into_iter()
            .map(|tool| (self.user, scope.clone(), tool))
            .collect();
        // The decision, and every approved call marked `running`, are stored before anything
        // runs: after a crash the request is decided (a second decision is refused) and its calls
        // are never run again.
        record.start_running();
        self.begin(
            Vec::new(),
            Some(record.clone()),
            grants,
            turn::TurnStart::Approved {
                record: Box::new(record),
            },
            None,
        )
    }
}

impl SessionActor {
    /// Answers a question asked during a running call of this node: checked, stored (once,
    /// while the stream runs), then handed to the turn, which gives it to the tool. Replies with
    /// the turn's own stream (it goes on).
    fn answer_during_call(
        &mut self,
        request_id: String,
        answer: &crate::elicitation::ElicitAnswer,
        waiting: live::Waiting,
    ) -> ResponseActFuture<Self, Result<TurnStarted, SessionError>> {
        let Some(stream) = self.turn.as_ref().map(|t| Arc::clone(&t.stream)) else {
            self.live.insert(request_id, waiting);
            return Box::pin(fut::ready(Err(SessionError::ApprovalExpired)));
        };
        let started = TurnStarted {
            session_id: self.id.clone(),
            stream_id: stream.id().clone(),
            stream,
        };
        let (storage, live, user, answer) = (
            self.deps.storage.clone(),
            Arc::clone(&self.live),
            self.user,
            answer.clone(),
        );
        Box::pin(
            async move {
                match live::store_answer(&storage, waiting.record.clone(), &answer, user).await {
                    Ok(Some(sent)) => {
                        let _ = waiting.answers.send(live::LiveAnswer { request_id, sent });
                        Ok(started)
                    }
                    // Answered meanwhile elsewhere (the tool gets that answer), or the call ended.
                    Ok(None) => {
                        live::forward_stored(storage, user, request_id, waiting).await;
                        Err(SessionError::AlreadyDecided)
                    }
                    Err(err) => {
                        live.insert(request_id, waiting);
                        Err(err)
                    }
                }
            }
            .into_actor(self),
        )
    }

    /// Applies the person's answer to the question the elicitation asks (checked against its
    /// schema first), and marks the calls that now have every answer `running`: they are sent
    /// again by the continuation turn; another unanswered question is asked by it instead.
    fn answer(
        &self,
        mut record: ApprovalRecord,
        answer: &crate::elicitation::ElicitAnswer,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ApprovalRecord, SessionError> {
        record
            .answer(answer, &format!("user:{}", self.user), now)
            .ok_or(SessionError::AlreadyDecided)?
            .map_err(SessionError::AnswerInvalid)?;
        metrics::counter!("aichat_elicitations_total", "outcome" => answer.action.as_str()).increment(1);
        metrics::histogram!("aichat_elicitation_wait_seconds")
            .record((now - record.created_at).num_milliseconds().max(0) as f64 / 1000.0);
        record.start_running();
        Ok(record)
    }

    /// On a shared store: `Stale` (and the actor stops) when another node ran a turn in the
    /// session since this copy was read, so the caller asks a fresh one; else `otherwise`.
    fn stale_or(&mut self, otherwise: SessionError) -> ResponseActFuture<Self, Result<TurnStarted, SessionError>> {
        let (storage, known) = (self.deps.storage.clone(), self.lease_token);
        let ask = LeaseToken {
            session_id: self.id.clone(),
        };
        Box::pin(
            async move { storage.ask(ask).await }
                .into_actor(self)
                .map(move |token, act, ctx| match token {
                    Ok(token) if token != known && act.turn.is_none() => {
                        ctx.stop();
                        Err(SessionError::Stale)
                    }
                    Ok(_) => Err(otherwise),
                    Err(err) => Err(err.into()),
                }),
        )
    }
}

impl Handler<AnsweredElsewhere> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: AnsweredElsewhere, ctx: &mut Self::Context) {
        // Taken here already (this node's own notice), or lapsed: nothing to do.
        let Some(waiting) = self.live.take(&msg.request_id) else {
            return;
        };
        let forward = live::forward_stored(self.deps.storage.clone(), self.user, msg.request_id, waiting);
        ctx.spawn(forward.into_actor(self));
    }
}

impl Handler<StopTurn> for SessionActor {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, msg: StopTurn, _: &mut Self::Context) -> Self::Result {
        let turn = self.turn.as_ref().ok_or(SessionError::TurnNotRunning)?;
        if msg.stream_id.as_ref().is_some_and(|id| id != turn.stream.id()) {
            return Err(SessionError::TurnNotRunning);
        }
        turn.stop.send_replace(Some(msg.reason));
        Ok(())
    }
}

impl Handler<StopIfIdle> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: StopIfIdle, ctx: &mut Self::Context) {
        if self.turn.is_none() {
            ctx.stop();
        }
    }
}

impl Handler<Shutdown> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        if let Some(handle) = self.turn.as_ref().and_then(|t| t.handle) {
            ctx.cancel_future(handle);
        }
        ctx.stop();
    }
}

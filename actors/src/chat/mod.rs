//! `Chat`: the only door into the core. The shell's handlers extract a request, make one call
//! here and turn the result into a DTO; every rule of the chat (in-band approval messages, turn
//! limits, ownership, the answer of a non-streaming send, cancel on disconnect) is applied here or
//! in the actors behind it. Each method sends the actor messages of one operation, with timeouts.

mod disconnect;
mod follow;
mod in_band;
mod records;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::answer::Answer;
use crate::approval::{ApprovalRecord, ApprovalStatus, Decision, Remember};
use crate::attachment::Attachment;
use crate::backlog::Queued;
use crate::ids::{SessionId, StreamId, UserId};
use crate::limits::{ReaderLimits, ReaderPermit, TurnLimits};
use crate::provider::Providers;
use crate::registry::{CountSessions, Evict, InterruptAll, Resolve, SessionRegistry, Submit};
use crate::session::{Decide, Resolution, SessionError, StartTurn, StopReason, StopTurn, TurnStarted};
use crate::storage::{
    ClearMessages, DeleteSession, GetApproval, GetSession, LoadStream, RequestCancel, Storage, StreamStatus,
};
use crate::stream::{StreamBuffer, StreamHub};

pub use disconnect::DisconnectGuard;

/// How often a decision is tried when the session is busy ending the turn that asked (on another
/// node) or this node's copy of it is stale.
const DECIDE_TRIES: u32 = 40;

/// A message a person sends: text (or an in-band `[APPROVE_TOOLS:<id>]` / `[DENY_TOOLS:<id>]`),
/// the session it continues, the provider it names, and its files.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// The text.
    pub text: String,
    /// The session it continues (`None`: a new one).
    pub session_id: Option<SessionId>,
    /// The provider it names (`None`: the default).
    pub provider: Option<String>,
    /// Files sent with it.
    pub attachments: Vec<Attachment>,
}

/// Where an answered question's turn goes on: a new stream (a paused turn's continuation) or the
/// one it was asked on (a call that waited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The session.
    pub session_id: SessionId,
    /// The stream to read.
    pub stream_id: StreamId,
}

/// The chat service's entry points.
#[derive(Clone)]
pub struct Chat {
    registry: Addr<SessionRegistry>,
    storage: Storage,
    hub: Arc<StreamHub>,
    providers: crate::sync::Shared<Providers>,
    limits: Arc<TurnLimits>,
    readers: Arc<ReaderLimits>,
    timeout: Duration,
    draining: Arc<AtomicBool>,
}

impl Chat {
    /// A handle over running actors; `limits` bounds each user's turns, `readers` the streams
    /// each user reads at once.
    pub fn new(
        registry: Addr<SessionRegistry>,
        storage: Storage,
        hub: Arc<StreamHub>,
        providers: crate::sync::Shared<Providers>,
        limits: TurnLimits,
        readers: Arc<ReaderLimits>,
        timeout: Duration,
    ) -> Self {
        Self {
            registry,
            storage,
            hub,
            providers,
            limits: Arc::new(limits),
            readers,
            timeout,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends `msg` to `addr`, counted in the mailbox backlog of `actor`, waiting at most the timeout.
    async fn ask<A, M>(&self, actor: &'static str, addr: &Addr<A>, msg: M) -> Result<M::Result, MailboxError>
    where
        A: Actor + Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let _queued = Queued::enter(actor);
        addr.send(msg).timeout(self.timeout).await
    }

    /// New per-user turn limits (a configuration reload); running turns are not affected.
    pub fn set_turn_limits(&self, max_running: usize, per_minute: u32) {
        self.limits.set(max_running, per_minute);
    }

    /// The stream hub.
    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.hub
    }

    /// The storage actor (for what is not a chat: the operators' records).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Sends a person's message: an in-band `[APPROVE_TOOLS:<id>]` / `[DENY_TOOLS:<id>]` decides
    /// that approval request (as the original UI does; it is not stored as a message); any other
    /// text is stored with its files and starts a turn, within the user's turn limits. Replies
    /// with where to read the stream.
    pub async fn send(&self, user: UserId, submission: Submission) -> Result<TurnStarted, SessionError> {
        if let Some((request_id, approved)) = in_band::decision(&submission.text) {
            if !submission.attachments.is_empty() {
                return Err(SessionError::DecisionWithFiles);
            }
            // The message is for its session: a request of another session (or, without a
            // session id, of any session) is not found from here.
            let Some(session) = submission.session_id.as_ref() else {
                return Err(SessionError::ApprovalNotFound);
            };
            let decision = Decision {
                approved,
                approved_ids: None,
                remember: Remember::None,
            };
            return self.decide(user, request_id, Some(session), decision).await;
        }
        if self.is_draining() {
            return Err(SessionError::ShuttingDown);
        }
        self.limits.admit(user, &self.hub)?;
        if let Some(name) = &submission.provider
            && !self.providers.get().contains(name)
        {
            return Err(SessionError::UnknownProvider(name.clone()));
        }
        let Submission {
            text,
            session_id,
            provider,
            attachments,
        } = submission;
        let turn = StartTurn {
            text,
            attachments,
            provider,
        };
        let submit = Submit { user, session_id, turn };
        self.ask("registry", &self.registry, submit).await?
    }

    /// A place for one more stream reader of `user` (held while the stream is read), or
    /// `TooManyStreams`.
    pub fn admit_reader(&self, user: UserId) -> Result<ReaderPermit, SessionError> {
        self.readers.admit(user)
    }

    /// Waits for the whole answer of a turn (a non-streaming send), at most `limit`.
    pub async fn answer(&self, started: &TurnStarted, limit: Duration) -> Result<Answer, SessionError> {
        tokio::time::timeout(limit, Answer::collect(&started.stream))
            .await
            .map_err(|_| SessionError::AnswerTimeout)?
            .map_err(SessionError::TurnFailed)
    }

    /// The stream's buffer, from memory or rebuilt from storage (followed live when its turn runs
    /// on another node); `StreamNotFound` for another user's.
    pub async fn open_stream(&self, user: UserId, id: &StreamId) -> Result<Arc<StreamBuffer>, SessionError> {
        if let Some(buffer) = self.hub.get(id) {
            return if buffer.user_id() == user {
                Ok(buffer)
            } else {
                Err(SessionError::StreamNotFound)
            };
        }
        let stored = self
            .storage
            .ask(LoadStream {
                user,
                id: id.clone(),
                after_seq: 0,
            })
            .await?
            .ok_or(SessionError::StreamNotFound)?;
        if self.storage.is_shared() && stored.0.status == StreamStatus::Running {
            let (buffer, new) = self.hub.insert_if_absent(StreamBuffer::following(&stored.0, stored.1));
            if new {
                let follower = follow::follow(self.storage.clone(), Arc::clone(&self.hub), Arc::clone(&buffer), user);
                actix_rt::spawn(follower);
            }
            return if buffer.user_id() == user {
                Ok(buffer)
            } else {
                Err(SessionError::StreamNotFound)
            };
        }
        Ok(StreamBuffer::from_stored(&stored.0, stored.1))
    }

    /// Clears a session's stored messages and its model context. `false` if not the user's:
    /// ownership is checked before anything is touched, so another user's turn runs on.
    pub async fn clear(&self, user: UserId, id: &SessionId) -> Result<bool, SessionError> {
        if self.storage.ask(GetSession { user, id: id.clone() }).await?.is_none() {
            return Ok(false);
        }
        self.evict(user, id).await?;
        Ok(self.storage.ask(ClearMessages { user, id: id.clone() }).await?)
    }

    /// Stops the owner's session actor (and its turn) after a clear or delete.
    async fn evict(&self, user: UserId, id: &SessionId) -> Result<(), MailboxError> {
        let session_id = id.clone();
        self.ask("registry", &self.registry, Evict { user, session_id }).await
    }

    /// Deletes a session, its messages and streams. `false` if not the user's.
    pub async fn delete(&self, user: UserId, id: &SessionId) -> Result<bool, SessionError> {
        let deleted = self.storage.ask(DeleteSession { user, id: id.clone() }).await?;
        if deleted {
            self.evict(user, id).await?;
            self.hub.remove_session(id);
        }
        Ok(deleted)
    }

    /// Stops a running turn on the person's request. `StreamNotFound` for another user's stream,
    /// `Finished` when its turn already ended.
    pub async fn cancel(&self, user: UserId, id: &StreamId) -> Result<(), SessionError> {
        let buffer = self.open_stream(user, id).await?;
        if buffer.is_finished() {
            return Err(SessionError::Finished);
        }
        if buffer.is_followed() {
            // The turn runs on another node: ask it through the database.
            let flagged = self.storage.ask(RequestCancel { user, id: id.clone() }).await?;
            return if flagged { Ok(()) } else { Err(SessionError::Finished) };
        }
        let resolve = Resolve {
            user,
            session_id: Some(buffer.session_id().clone()),
        };
        let (_, addr) = self.ask("registry", &self.registry, resolve).await??;
        let stop = StopTurn {
            stream_id: Some(id.clone()),
            reason: StopReason::Cancelled,
        };
        match self.ask("session", &addr, stop).await? {
            // The turn ended between the check and the stop.
            Err(SessionError::TurnNotRunning) => Err(SessionError::Finished),
            other => other,
        }
    }

    /// How many session actors are in memory (`None` when the registry does not answer).
    pub async fn session_actors(&self) -> Option<usize> {
        self.ask("registry", &self.registry, CountSessions).await.ok()
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Shutdown: refuses new turns, lets running turns finish for up to `grace`, then stops the
    /// rest (stored as interrupted, their streams ended) and waits for them to be stored.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        if !self.wait_idle(grace).await {
            let stopped = self.ask("registry", &self.registry, InterruptAll).await.unwrap_or(0);
            tracing::warn!(sessions = stopped, "grace period over: interrupting running turns");
            self.wait_idle(self.timeout).await;
        }
    }

    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.hub.running() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        true
    }

    /// Decides an approval request of this user, named by its id or its history row's. `session`
    /// (from an in-band message) must be the request's session. Replies like a streaming send: the continuation's stream.
    pub async fn decide(
        &self,
        user: UserId,
        request_id: &str,
        session: Option<&SessionId>,
        decision: Decision,
    ) -> Result<TurnStarted, SessionError> {
        self.resolve(user, request_id, session, Resolution::Approval(decision))
            .await
    }

    /// Answers a tool's question (an elicitation) of this user: a paused turn continues on a
    /// new stream; a call that waits for it (on this node or, on a shared store, another) goes on
    /// on its own. Replies with the stream to read. Refusals name the elicitation.
    pub async fn answer_elicitation(
        &self,
        user: UserId,
        request_id: &str,
        answer: crate::elicitation::ElicitAnswer,
    ) -> Result<Answered, SessionError> {
        let answered = match self
            .resolve(user, request_id, None, Resolution::Elicitation(answer.clone()))
            .await
        {
            Ok(turn) => Ok(Answered {
                session_id: turn.session_id,
                stream_id: turn.stream_id,
            }),
            Err(SessionError::Elsewhere) => self.answer_on_another_node(user, request_id, &answer).await,
            Err(err) => Err(err),
        };
        answered.map_err(|err| match err {
            SessionError::ApprovalNotFound => SessionError::ElicitationNotFound,
            SessionError::AlreadyDecided => SessionError::ElicitationAnswered,
            SessionError::ApprovalExpired => SessionError::ElicitationExpired,
            other => other,
        })
    }

    /// A question asked by a call that runs on another node (a shared store): the answer is
    /// checked and stored here, and that node is told (`NOTIFY`); it gives it to the tool.
    async fn answer_on_another_node(
        &self,
        user: UserId,
        request_id: &str,
        answer: &crate::elicitation::ElicitAnswer,
    ) -> Result<Answered, SessionError> {
        let record = self
            .storage
            .ask(GetApproval {
                user,
                request_id: request_id.to_owned(),
            })
            .await?
            .filter(ApprovalRecord::is_elicitation)
            .ok_or(SessionError::ApprovalNotFound)?;
        let answered = Answered {
            session_id: record.session_id.clone(),
            stream_id: record.stream_id.clone(),
        };
        match crate::session::store_answer(&self.storage, record, answer, user).await? {
            Some(_) => Ok(answered),
            // Answered meanwhile, or its turn ended: the question lapsed with its call.
            None => Err(SessionError::ApprovalExpired),
        }
    }

    /// Applies a decision or an answer to the request the session paused on.
    async fn resolve(
        &self,
        user: UserId,
        request_id: &str,
        session: Option<&SessionId>,
        decision: Resolution,
    ) -> Result<TurnStarted, SessionError> {
        if self.is_draining() {
            return Err(SessionError::ShuttingDown);
        }
        let elicitation = matches!(decision, Resolution::Elicitation(_));
        let record = self
            .storage
            .ask(GetApproval {
                user,
                request_id: request_id.to_owned(),
            })
            .await?
            .filter(|r| session.is_none_or(|s| *s == r.session_id))
            .filter(|r| r.is_elicitation() == elicitation)
            .ok_or(SessionError::ApprovalNotFound)?;
        match record.effective_status(crate::model::now()) {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Expired => return Err(SessionError::ApprovalExpired),
            _ => return Err(SessionError::AlreadyDecided),
        }
        // The turn that asked may still be ending on another node (its lease not yet given
        // back), and this node's copy of the session may be stale: a few tries, briefly apart.
        let mut tries = 0;
        loop {
            tries += 1;
            let resolve = Resolve {
                user,
                session_id: Some(record.session_id.clone()),
            };
            let (_, addr) = self.ask("registry", &self.registry, resolve).await??;
            let decide = Decide {
                request_id: record.request_id.clone(),
                decision: decision.clone(),
                during_call: record.is_live(),
            };
            match self.ask("session", &addr, decide).await? {
                Err(SessionError::Stale) if tries < DECIDE_TRIES => {
                    let session_id = record.session_id.clone();
                    self.ask("registry", &self.registry, Evict { user, session_id }).await?;
                }
                Err(SessionError::Busy) if tries < DECIDE_TRIES && self.storage.is_shared() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }
}

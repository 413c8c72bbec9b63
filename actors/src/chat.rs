//! `Chat`: the handle the HTTP shell holds. Each method sends the actor messages of one
//! operation (with timeouts) so handlers stay thin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::approval::Decision;
use crate::backlog::Queued;
use crate::ids::{SessionId, StreamId, UserId};
use crate::registry::{Evict, InterruptAll, Resolve, SessionRegistry};
use crate::session::{Decide, SessionError, StartTurn, StopReason, StopTurn, TurnStarted};
use crate::storage::{ClearMessages, DeleteSession, GetApproval, GetSession, LoadStream, Storage};
use crate::stream::{StreamBuffer, StreamHub};

/// The chat service's entry points.
#[derive(Clone)]
pub struct Chat {
    registry: Addr<SessionRegistry>,
    storage: Storage,
    hub: Arc<StreamHub>,
    timeout: Duration,
    draining: Arc<AtomicBool>,
}

impl Chat {
    /// A handle over running actors.
    pub fn new(registry: Addr<SessionRegistry>, storage: Storage, hub: Arc<StreamHub>, timeout: Duration) -> Self {
        Self {
            registry,
            storage,
            hub,
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

    /// The storage handle (session CRUD goes straight to the storage actor).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The stream hub.
    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.hub
    }

    /// Stores the person's message (with its files) and starts a turn. Replies with where to read
    /// the stream.
    pub async fn submit(
        &self,
        user: UserId,
        session_id: Option<SessionId>,
        text: String,
        attachments: Vec<crate::attachment::Attachment>,
        provider: Option<String>,
    ) -> Result<TurnStarted, SessionError> {
        if self.is_draining() {
            return Err(SessionError::ShuttingDown);
        }
        // A session actor can stop between lookup and send (idle, crash); one retry starts a new one.
        let mut last_error = None;
        for _ in 0..2 {
            let (_, addr) = self
                .ask(
                    "registry",
                    &self.registry,
                    Resolve {
                        user,
                        session_id: session_id.clone(),
                    },
                )
                .await??;
            match self
                .ask(
                    "session",
                    &addr,
                    StartTurn {
                        text: text.clone(),
                        attachments: attachments.clone(),
                        provider: provider.clone(),
                    },
                )
                .await
            {
                Ok(started) => return started,
                Err(MailboxError::Closed) => last_error = Some(MailboxError::Closed),
                Err(err) => return Err(err.into()),
            }
        }
        Err(last_error.unwrap_or(MailboxError::Closed).into())
    }

    /// The stream's buffer, from memory or rebuilt from storage; `NotFound` for another user's.
    pub async fn open_stream(&self, user: UserId, id: &StreamId) -> Result<Arc<StreamBuffer>, SessionError> {
        if let Some(buffer) = self.hub.get(id) {
            return if buffer.user_id() == user {
                Ok(buffer)
            } else {
                Err(SessionError::NotFound("stream"))
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
            .ok_or(SessionError::NotFound("stream"))?;
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

    /// Stops a running turn on the person's request. `NotFound` for another user's stream,
    /// `Finished` when its turn already ended.
    pub async fn cancel(&self, user: UserId, id: &StreamId) -> Result<(), SessionError> {
        let buffer = self.open_stream(user, id).await?;
        if buffer.is_finished() {
            return Err(SessionError::Finished);
        }
        let (_, addr) = self
            .registry
            .send(Resolve {
                user,
                session_id: Some(buffer.session_id().clone()),
            })
            .timeout(self.timeout)
            .await??;
        let stop = StopTurn {
            stream_id: Some(id.clone()),
            reason: StopReason::Cancelled,
        };
        match self.ask("session", &addr, stop).await? {
            // The turn ended between the check and the stop.
            Err(SessionError::NotFound(_)) => Err(SessionError::Finished),
            other => other,
        }
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
        if self.is_draining() {
            return Err(SessionError::ShuttingDown);
        }
        let record = self
            .storage
            .ask(GetApproval {
                user,
                request_id: request_id.to_owned(),
            })
            .await?
            .filter(|r| session.is_none_or(|s| *s == r.session_id))
            .ok_or(SessionError::NotFound("approval"))?;
        match record.effective_status(crate::model::now()) {
            "pending" => {}
            "expired" => return Err(SessionError::ApprovalExpired),
            _ => return Err(SessionError::AlreadyDecided),
        }
        let (_, addr) = self
            .registry
            .send(Resolve {
                user,
                session_id: Some(record.session_id.clone()),
            })
            .timeout(self.timeout)
            .await??;
        self.ask(
            "session",
            &addr,
            Decide {
                request_id: record.request_id,
                decision,
            },
        )
        .await?
    }
}

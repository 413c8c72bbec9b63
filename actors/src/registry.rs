//! The session registry: finds or starts the session actor of a session, checking ownership
//! through storage, forwards a new turn to it (`Submit`: one round trip for a send), and forgets
//! actors that stopped. It also sweeps finished streams out of memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;

use crate::backlog::Queued;
use crate::ids::{SessionId, UserId};
use crate::model::{Session, TitleSource};
use crate::session::{
    AnsweredElsewhere, Forget, SessionActor, SessionDeps, SessionError, Shutdown, StartTurn, StopIfIdle, StopReason,
    StopTurn, TurnStarted,
};
use crate::storage::{CreateSession, GetSession};

/// Finds the user's session (or creates one when `session_id` is absent, unknown or not theirs,
/// as the original did) and returns its running actor.
#[derive(Message)]
#[rtype(result = "Result<(SessionId, Addr<SessionActor>), SessionError>")]
pub struct Resolve {
    /// Who asks.
    pub user: UserId,
    /// The session the client named, if any.
    pub session_id: Option<SessionId>,
}

/// Starts a turn in the user's session (found or created as [`Resolve`] does): the registry
/// forwards `turn` to the session's actor and replies with its answer, so a send costs the caller
/// one round trip. A session actor that stopped between lookup and forward is started afresh once.
#[derive(Message)]
#[rtype(result = "Result<TurnStarted, SessionError>")]
pub struct Submit {
    /// Who asks.
    pub user: UserId,
    /// The session the client named, if any.
    pub session_id: Option<SessionId>,
    /// The turn to start.
    pub turn: StartTurn,
}

/// Stops a session's actor, cancelling its turn (after a clear or delete). Only the session's
/// owner can evict it: a message naming another user's session changes nothing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict {
    /// Who asks.
    pub user: UserId,
    /// The session.
    pub session_id: SessionId,
}

/// Stops the turn of `stream_id` if its session's actor runs here (a cancel asked on another
/// node, through the database).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelHere {
    /// The session.
    pub session_id: SessionId,
    /// The stream whose turn to stop.
    pub stream_id: crate::ids::StreamId,
}

/// Another node stored the answer to a question a turn of this node asked during a call.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnsweredHere {
    /// The session.
    pub session_id: SessionId,
    /// The elicitation.
    pub request_id: String,
}

/// How many session actors are in memory.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountSessions;

/// Stops every running turn (shutdown): each stores its partial answer as interrupted.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct InterruptAll;

/// The registry actor.
pub struct SessionRegistry {
    deps: Arc<SessionDeps>,
    sessions: HashMap<SessionId, Live>,
    /// Longest wait for a session actor to answer a forwarded message.
    timeout: Duration,
}

/// A running session actor as the registry knows it.
struct Live {
    user: UserId,
    addr: Addr<SessionActor>,
    /// When a message last went to it.
    used: Instant,
    /// Asked to stop if idle (it ignores that while a turn runs).
    retiring: bool,
}

impl SessionRegistry {
    /// A registry whose sessions share `deps` (it sweeps their hub's finished streams); a
    /// forwarded message waits at most `timeout` for its session actor.
    pub fn new(deps: Arc<SessionDeps>, timeout: Duration) -> Self {
        Self {
            deps,
            sessions: HashMap::new(),
            timeout,
        }
    }

    fn running(&mut self, user: UserId, id: &SessionId) -> Option<Addr<SessionActor>> {
        let live = self
            .sessions
            .get_mut(id)
            .filter(|live| live.user == user && live.addr.connected())?;
        live.used = Instant::now();
        live.retiring = false;
        Some(live.addr.clone())
    }

    /// Past the cap, asks the least recently used session actors to stop if idle (a tenth of the
    /// cap at once, so this runs once per so many new sessions). They come back from storage.
    fn retire_idle(&mut self) {
        let max = self.deps.settings.get().max_live_sessions;
        let candidates = self.sessions.values().filter(|live| !live.retiring).count();
        if candidates <= max {
            return;
        }
        let mut by_use: Vec<(Instant, SessionId)> = self
            .sessions
            .iter()
            .filter(|(_, live)| !live.retiring)
            .map(|(id, live)| (live.used, id.clone()))
            .collect();
        by_use.sort_unstable_by_key(|(used, _)| *used);
        let retire = candidates - max + max / 10;
        for (_, id) in by_use.into_iter().take(retire) {
            if let Some(live) = self.sessions.get_mut(&id) {
                live.retiring = true;
                live.addr.do_send(StopIfIdle);
            }
        }
    }

    /// The session's actor, started if needed (`created`: the session was created just now).
    fn get_or_start(
        &mut self,
        user: UserId,
        id: SessionId,
        created: bool,
        ctx: &mut Context<Self>,
    ) -> Addr<SessionActor> {
        if let Some(addr) = self.running(user, &id) {
            return addr;
        }
        let actor = SessionActor::new(id.clone(), user, Arc::clone(&self.deps), ctx.address().recipient());
        let addr = if created { actor.created() } else { actor }.start();
        let live = Live {
            user,
            addr: addr.clone(),
            used: Instant::now(),
            retiring: false,
        };
        self.sessions.insert(id, live);
        self.retire_idle();
        addr
    }
}

/// The title of a session the server creates for a first message.
pub fn default_title() -> String {
    format!("Chat - {}", Utc::now().format("%b %-d, %Y at %-I:%M %p"))
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Often enough that the byte budget holds between sweeps.
        let every = (self.deps.hub.retention() / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        ctx.run_interval(every, |act, _| {
            let removed = act.deps.hub.sweep();
            if removed > 0 {
                tracing::debug!(removed, "finished streams left memory");
            }
        });
    }
}

impl Supervised for SessionRegistry {
    fn restarting(&mut self, _: &mut Self::Context) {
        // Running session actors stop by themselves when idle; forget them and start afresh.
        self.sessions.clear();
    }
}

impl SessionRegistry {
    /// The user's session named `session_id` (or a new one) and its running actor.
    fn resolve(
        &mut self,
        user: UserId,
        session_id: Option<SessionId>,
    ) -> ResponseActFuture<Self, Result<(SessionId, Addr<SessionActor>), SessionError>> {
        if let Some(id) = &session_id
            && let Some(addr) = self.running(user, id)
        {
            return Box::pin(fut::ready(Ok((id.clone(), addr))));
        }
        let storage = self.deps.storage.clone();
        let lookup = async move {
            if let Some(id) = session_id
                && let Some(session) = storage.ask(GetSession { user, id }).await?
            {
                return Ok::<_, SessionError>((session.id, false));
            }
            let session = Session::new(user, default_title(), TitleSource::Default);
            let id = session.id.clone();
            storage.ask(CreateSession { session }).await?;
            Ok((id, true))
        };
        Box::pin(lookup.into_actor(self).map(move |found, act, ctx| {
            let (id, created) = found?;
            Ok((id.clone(), act.get_or_start(user, id, created, ctx)))
        }))
    }

    /// Sends `turn` to a session actor, counted in the session backlog.
    fn forward(
        &self,
        addr: &Addr<SessionActor>,
        turn: StartTurn,
    ) -> impl Future<Output = Result<Result<TurnStarted, SessionError>, MailboxError>> + use<> {
        let (request, timeout) = (addr.send(turn), self.timeout);
        async move {
            let _queued = Queued::enter("session");
            tokio::time::timeout(timeout, request)
                .await
                .unwrap_or(Err(MailboxError::Timeout))
        }
    }
}

impl Handler<Resolve> for SessionRegistry {
    type Result = ResponseActFuture<Self, Result<(SessionId, Addr<SessionActor>), SessionError>>;

    fn handle(&mut self, msg: Resolve, _: &mut Self::Context) -> Self::Result {
        self.resolve(msg.user, msg.session_id)
    }
}

impl Handler<Submit> for SessionRegistry {
    type Result = ResponseActFuture<Self, Result<TurnStarted, SessionError>>;

    fn handle(&mut self, msg: Submit, _: &mut Self::Context) -> Self::Result {
        let Submit { user, session_id, turn } = msg;
        Box::pin(
            self.resolve(user, session_id)
                .then(move |found, act, _| -> ResponseActFuture<Self, _> {
                    let (id, addr) = match found {
                        Ok(found) => found,
                        Err(err) => return Box::pin(fut::ready(Err(err))),
                    };
                    let again = turn.clone();
                    let first = act.forward(&addr, turn);
                    Box::pin(
                        first
                            .into_actor(act)
                            .then(move |sent, act, ctx| -> ResponseActFuture<Self, _> {
                                match sent {
                                    // The actor stopped between lookup and forward (idle, crash), or its copy
                                    // of the session was stale (another node ran a turn in it): once more
                                    // with a fresh one, loaded from storage.
                                    Err(MailboxError::Closed) | Ok(Err(SessionError::Stale)) => {
                                        if act.sessions.get(&id).is_some_and(|live| live.addr == addr) {
                                            act.sessions.remove(&id);
                                        }
                                        let fresh = act.get_or_start(user, id, false, ctx);
                                        Box::pin(act.forward(&fresh, again).into_actor(act).map(|sent, _, _| sent?))
                                    }
                                    Ok(started) => Box::pin(fut::ready(started)),
                                    Err(err) => Box::pin(fut::ready(Err(err.into()))),
                                }
                            }),
                    )
                }),
        )
    }
}

impl Handler<Evict> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Evict, _: &mut Self::Context) {
        if self
            .sessions
            .get(&msg.session_id)
            .is_some_and(|live| live.user == msg.user)
            && let Some(live) = self.sessions.remove(&msg.session_id)
        {
            live.addr.do_send(Shutdown);
        }
    }
}

impl Handler<Forget> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Self::Context) {
        if self
            .sessions
            .get(&msg.session_id)
            .is_some_and(|live| live.addr == msg.addr)
        {
            self.sessions.remove(&msg.session_id);
        }
    }
}

impl Handler<CancelHere> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: CancelHere, _: &mut Self::Context) {
        if let Some(live) = self.sessions.get(&msg.session_id) {
            live.addr.do_send(StopTurn {
                stream_id: Some(msg.stream_id),
                reason: StopReason::Cancelled,
            });
        }
    }
}

impl Handler<AnsweredHere> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: AnsweredHere, _: &mut Self::Context) {
        if let Some(live) = self.sessions.get(&msg.session_id) {
            live.addr.do_send(AnsweredElsewhere {
                request_id: msg.request_id,
            });
        }
    }
}

impl Handler<CountSessions> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _: CountSessions, _: &mut Self::Context) -> usize {
        self.sessions.len()
    }
}

impl Handler<InterruptAll> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _: InterruptAll, _: &mut Self::Context) -> usize {
        for live in self.sessions.values() {
            live.addr.do_send(StopTurn {
                stream_id: None,
                reason: StopReason::Interrupted,
            });
        }
        self.sessions.len()
    }
}

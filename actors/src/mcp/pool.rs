//! `McpPool`: the actor of one MCP server. It owns the server's connection actors and everything
//! a call needs to choose one: their states, peers and tools (reported by the connections as
//! `ConnectionUp` / `ConnectionDown` / `ToolsListed`), the calls in flight on each, and the
//! server's concurrency permits. All of it is plain actor state: no mutex, no atomics.
//!
//! A `CallTool` message is answered with a future that does not hold the mailbox: the pool takes
//! a permit (or queues for one), picks the least busy ready connection, and sends the request on
//! its peer; many calls run at once. The request is bounded by the call's own clock, which
//! progress notifications extend and which stands still while the server waits on the person's
//! answer to its question; it is cancelled on the server (`notifications/cancelled`) when it
//! times out or its caller goes away. What readers need without a message round trip (the tool list the
//! catalog offers on every model call, the status) is published through a watch channel.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotificationParam, ClientRequest, InputRequest,
    InputRequiredResult, ServerResult, Tool,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use rmcp::{Peer, RoleClient};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use utoipa::ToSchema;

use super::catalog::outcome_of;
use super::clock::CallClock;
use super::config::{ServerSpec, Transport};
use super::connection::{CloseConnection, ConnState, ConnectionLost, McpConnection, Refresh};
use crate::backlog::Queued;
use crate::elicitation::{InputReply, Question};
use crate::tools::ToolOutcome;

/// Calls one of the server's tools. Answered when the call ends; dropping `caller`'s sender (the
/// caller went away) abandons it and tells the server.
#[derive(Message)]
#[rtype(result = "ToolOutcome")]
pub struct CallTool {
    /// The server's own name for the tool.
    pub tool: String,
    /// Its arguments.
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The person's answers to the server's questions of the previous round, if any.
    pub reply: Option<InputReply>,
    /// Where the server's progress notices for this call go.
    pub progress: Option<super::progress::ProgressSink>,
    /// Where the server's questions for the person during this call go (none: answered `cancel`).
    pub asker: Option<super::asking::AskSink>,
    /// Resolves when the caller is gone.
    pub caller: oneshot::Receiver<()>,
    /// Counts the message in the backlog until the pool has taken it.
    pub queued: Queued,
}

/// A connection is ready: its peer and tools.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionUp {
    /// Which connection of the pool.
    pub index: usize,
    /// Its generation (bumped on every new connection).
    pub generation: u64,
    /// Its name among all connections of the process (for its calls' progress).
    pub link: u64,
    /// Where calls go.
    pub peer: Peer<RoleClient>,
    /// The server's tools.
    pub tools: Vec<Tool>,
    /// The protocol revision the handshake settled on.
    pub protocol_version: String,
}

/// A connection is not (or no longer) usable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionDown {
    /// Which connection.
    pub index: usize,
    /// Its generation.
    pub generation: u64,
    /// Where it stands now.
    pub state: ConnState,
    /// Why, if it failed.
    pub reason: Option<String>,
}

/// A ready connection listed the server's tools again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToolsListed {
    /// Which connection.
    pub index: usize,
    /// Its generation.
    pub generation: u64,
    /// The tools.
    pub tools: Vec<Tool>,
}

/// Re-list tools on ready connections and reconnect the others; replies when the re-lists end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RefreshPool;

/// The server was removed (a reload): once its calls in flight end, its connections close
/// (their processes exit) and the pool stops when nobody holds it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetirePool;

/// A server as `GET /v1/chat/mcp/servers` shows it.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ServerStatus {
    /// Its name.
    pub name: String,
    /// `stdio` or `streamable_http`.
    pub transport: &'static str,
    /// `ready` if any connection is ready, else the first connection's state.
    pub state: &'static str,
    /// Tools it offers.
    pub tool_count: usize,
    /// Calls in flight over all its connections.
    pub calls_in_flight: usize,
    /// Ready connections out of `pool_size`.
    pub connections_ready: usize,
    /// Its pool size.
    pub pool_size: usize,
    /// The last failure, if any connection has one.
    pub last_error: Option<String>,
    /// The protocol revision its first ready connection speaks (`2026-07-28`, `2025-11-25`, …).
    pub protocol_version: Option<String>,
}

impl ServerStatus {
    /// Why a call cannot be sent: the state and the last failure.
    pub fn unavailable(&self) -> String {
        match &self.last_error {
            Some(err) => format!("MCP server `{}` is {} ({err})", self.name, self.state),
            None => format!("MCP server `{}` is {}", self.name, self.state),
        }
    }
}

/// What the pool publishes on every change.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    /// The tools of its first ready connection.
    pub tools: Arc<Vec<Tool>>,
    /// Where it stands.
    pub status: ServerStatus,
}

/// One connection as the pool sees it.
struct Conn {
    addr: Option<Addr<McpConnection>>,
    state: ConnState,
    peer: Option<Peer<RoleClient>>,
    tools: Arc<Vec<Tool>>,
    last_error: Option<String>,
    generation: u64,
    /// The connection's process-wide name (see [`ConnectionUp::link`]).
    link: u64,
    in_flight: usize,
    protocol_version: Option<String>,
}

/// The pool actor of one server.
pub struct McpPool {
    spec: Arc<ServerSpec>,
    conns: Vec<Conn>,
    /// Permits taken (calls admitted and not finished).
    in_use: usize,
    /// Calls waiting for a permit, oldest first.
    waiting: VecDeque<oneshot::Sender<()>>,
    view: watch::Sender<PoolView>,
    /// Removed: close the connections when the last call ends.
    retiring: bool,
}

impl McpPool {
    /// Starts the pool (supervised) and its `pool_size` supervised connections on `arbiter`.
    /// Returns its address and the view it publishes.
    pub fn start(spec: ServerSpec, arbiter: &ArbiterHandle) -> (Addr<Self>, watch::Receiver<PoolView>) {
        let spec = Arc::new(spec);
        let (view, published) = watch::channel(PoolView::default());
        let addr = Supervisor::start_in_arbiter(arbiter, move |ctx: &mut Context<Self>| {
            let pool = ctx.address().recipient();
            let ups = ctx.address().recipient();
            let listed = ctx.address().recipient();
            let arbiter = Arbiter::current();
            let conns = (0..spec.pool_size)
                .map(|index| {
                    let (spec, pool, ups, listed) = (Arc::clone(&spec), pool.clone(), ups.clone(), listed.clone());
                    let addr = Supervisor::start_in_arbiter(&arbiter, move |_| {
                        McpConnection::new(spec, index, pool, ups, listed)
                    });
                    Conn {
                        addr: Some(addr),
                        state: ConnState::Connecting,
                        peer: None,
                        tools: Arc::new(Vec::new()),
                        last_error: None,
                        generation: 0,
                        link: 0,
                        in_flight: 0,
                        protocol_version: None,
                    }
                })
                .collect();
            let pool = Self {
                spec,
                conns,
                in_use: 0,
                waiting: VecDeque::new(),
                view,
                retiring: false,
            };
            pool.publish();
            pool
        });
        (addr, published)
    }

    fn publish(&self) {
        let ready: Vec<&Conn> = self.conns.iter().filter(|c| c.state == ConnState::Ready).collect();
        let state = if ready.is_empty() {
            self.conns.first().map_or(ConnState::Failed, |c| c.state)
        } else {
            ConnState::Ready
        };
        let tools = ready.first().map(|c| Arc::clone(&c.tools)).unwrap_or_default();
        let status = ServerStatus {
            name: self.spec.name.clone(),
            transport: self.spec.transport.kind(),
            state: state.as_str(),
            tool_count: tools.len(),
            calls_in_flight: self.conns.iter().map(|c| c.in_flight).sum(),
            connections_ready: ready.len(),
            pool_size: self.spec.pool_size,
            last_error: self.conns.iter().find_map(|c| c.last_error.clone()),
            protocol_version: ready.first().and_then(|c| c.protocol_version.clone()),
        };
        self.view.send_replace(PoolView { tools, status });
    }

    /// The connection a report is about, at the report's generation; `None` for a stale report
    /// (an older generation than the pool already knows).
    fn reported(&mut self, index: usize, generation: u64) -> Option<&mut Conn> {
        let conn = self.conns.get_mut(index).filter(|conn| generation >= conn.generation)?;
        conn.generation = generation;
        Some(conn)
    }

    /// The least busy ready connection: its index, peer and generation.
    fn pick(&self) -> Option<(usize, Peer<RoleClient>, u64, u64)> {
        self.conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state == ConnState::Ready)
            .filter_map(|(i, c)| Some((c.in_flight, i, c.peer.clone()?, c.generation, c.link)))
            .min_by_key(|(busy, i, _, _, _)| (*busy, *i))
            .map(|(_, i, peer, generation, link)| (i, peer, generation, link))
    }

    /// Hands the permit of a finished call to the oldest waiting call, or returns it; a
    /// retiring pool closes its connections once the last call has ended.
    fn release(&mut self) {
        while let Some(next) = self.waiting.pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        self.in_use = self.in_use.saturating_sub(1);
        self.close_if_retired();
    }

    fn close_if_retired(&mut self) {
        if !self.retiring || self.in_use > 0 {
            return;
        }
        for conn in &mut self.conns {
            if let Some(addr) = conn.addr.take() {
                addr.do_send(CloseConnection);
            }
        }
    }

    fn describe_unavailable(&self) -> String {
        self.view.borrow().status.unavailable()
    }

    /// Runs an admitted call on the least busy ready connection.
    fn run(
        &mut self,
        tool: String,
        arguments: serde_json::Map<String, serde_json::Value>,
        reply: Option<InputReply>,
        (progress, asker): (Option<super::progress::ProgressSink>, Option<super::asking::AskSink>),
        mut caller: oneshot::Receiver<()>,
    ) -> ResponseActFuture<Self, ToolOutcome> {
        let Some((index, peer, generation, link)) = self.pick() else {
            self.release();
            return Box::pin(fut::ready(ToolOutcome::Failure(self.describe_unavailable())));
        };
        self.conns[index].in_flight += 1;
        self.publish();
        let timeout = self.spec.call_timeout;
        let mut params = CallToolRequestParams::new(tool).with_arguments(arguments);
        if let Some(reply) = reply {
            // Only this call carries its answers and state, exactly as the server sent the state.
            params.input_responses = Some(reply.responses).filter(|r| !r.is_empty());
            params.request_state = reply.request_state;
        }
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        // The call's own clock, not the request's: progress extends it, a question stops it.
        let clock = Arc::new(CallClock::start(timeout));
        // Only a server told it may ask sends questions.
        let may_ask = self.spec.elicitation;
        let call = async move {
            // Listening before the request goes: a server may ask at once.
            let _asking = asker
                .filter(|_| may_ask)
                .map(|sink| super::asking::register(link, paused_while_asking(&clock, sink)));
            let handle = match peer
                .send_cancellable_request(request, PeerRequestOptions::no_options())
                .await
            {
                Ok(handle) => handle,
                Err(err) => return Sent::Failed(err),
            };
            let noticed: super::progress::ProgressSink = {
                let clock = Arc::clone(&clock);
                Arc::new(move |note| {
                    clock.progressed();
                    if let Some(sink) = &progress {
                        sink(note);
                    }
                })
            };
            let _progress = super::progress::register(link, &handle.progress_token, noticed);
            let mut guard = CancelOnDrop {
                peer: Some(peer.clone()),
                id: Some(handle.id.clone()),
            };
            // Dropped unanswered (caller gone, time up), the guard tells the server.
            let response = tokio::select! {
                response = handle.await_response() => response,
                _ = &mut caller => return Sent::Abandoned,
                () = clock.expired() => return Sent::TimedOut,
            };
            guard.id = None;
            match response {
                Ok(result) => Sent::Answered(Box::new(result)),
                Err(err) => Sent::Failed(err),
            }
        };
        Box::pin(call.into_actor(self).map(move |sent, act, _| {
            if let Some(conn) = act.conns.get_mut(index) {
                conn.in_flight = conn.in_flight.saturating_sub(1);
            }
            act.release();
            act.publish();
            let lost = |act: &mut Self, reason: String| {
                if let Some(addr) = act.conns.get(index).and_then(|c| c.addr.as_ref()) {
                    addr.do_send(ConnectionLost { generation, reason });
                }
            };
            match sent {
                Sent::Abandoned => ToolOutcome::Failure("the call was abandoned by its caller".into()),
                Sent::Answered(answer) => match *answer {
                    ServerResult::CallToolResult(result) => outcome_of(result),
                    ServerResult::InputRequiredResult(asked) => input_required(asked, act.spec.elicitation),
                    _ => ToolOutcome::Failure("the MCP server sent an unexpected response".into()),
                },
                Sent::TimedOut => {
                    // Over HTTP a call without an answer in time may mean a dead connection.
                    if matches!(act.spec.transport, Transport::StreamableHttp { .. }) {
                        lost(act, "a call timed out".into());
                    }
                    ToolOutcome::Failure(format!("the tool did not answer within {} s", timeout.as_secs()))
                }
                Sent::Failed(err) => {
                    if matches!(err, ServiceError::TransportClosed | ServiceError::TransportSend(_)) {
                        lost(act, err.to_string());
                    }
                    ToolOutcome::Failure(describe_error(&err))
                }
            }
        }))
    }
}

/// How a sent call ended.
enum Sent {
    /// The server answered.
    Answered(Box<ServerResult>),
    /// The request failed.
    Failed(ServiceError),
    /// No answer in time (the server is told to stop).
    TimedOut,
    /// The caller went away (the server is told to stop).
    Abandoned,
}

/// A call's question sink that stops the call's clock while the person is asked.
fn paused_while_asking(clock: &Arc<CallClock>, sink: super::asking::AskSink) -> super::asking::AskSink {
    let clock = Arc::clone(clock);
    Arc::new(move |question| {
        let (clock, asked) = (Arc::clone(&clock), sink(question));
        Box::pin(async move {
            clock.asking();
            let answer = asked.await;
            clock.answered();
            answer
        })
    })
}

/// A call the server answered with "input required": the questions for the person (only
/// elicitation is offered: sampling and roots are not declared, so asking for them fails).
fn input_required(asked: InputRequiredResult, offered: bool) -> ToolOutcome {
    if !offered {
        return ToolOutcome::Failure(
            "the MCP server asked for the person's input, and elicitation is off ([mcp.elicitation])".into(),
        );
    }
    let mut questions = Vec::new();
    for (key, request) in asked.input_requests.unwrap_or_default() {
        let question = match &request {
            InputRequest::Elicitation(request) => serde_json::to_value(request)
                .ok()
                .and_then(|json| Question::from_params(&key, json.get("params")?)),
            _ => None,
        };
        match question {
            Some(question) => questions.push(question),
            None => {
                let method = serde_json::to_value(&request)
                    .ok()
                    .and_then(|json| json.get("method")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return ToolOutcome::Failure(format!(
                    "the MCP server asked for input aichat does not offer ({method:?}, key {key:?})"
                ));
            }
        }
    }
    ToolOutcome::InputRequired {
        questions,
        request_state: asked.request_state,
    }
}

/// What the model and the person read of a failed call. A connection that breaks during a call
/// leaves its outcome unknown, and the call is never sent again on its own (the 2026-07-28
/// revision counts a broken stream as a cancellation): the text says so.
fn describe_error(err: &ServiceError) -> String {
    match err {
        ServiceError::McpError(data) => format!("{} (code {})", data.message, data.code.0),
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
            "the MCP server closed the connection during the call: whether the tool acted is unknown \
             (it was not sent again)"
                .into()
        }
        other => other.to_string(),
    }
}

/// Tells the server to stop working on a call whose caller went away (turn cancelled).
struct CancelOnDrop {
    peer: Option<Peer<RoleClient>>,
    id: Option<rmcp::model::RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(peer), Some(id)) = (self.peer.take(), self.id.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let note = CancelledNotificationParam::new(Some(id), Some("abandoned by the caller".into()));
                let _ = peer.notify_cancelled(note).await;
            });
        }
    }
}

impl Actor for McpPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every call of every session of this server comes through here.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Supervised for McpPool {
    fn restarting(&mut self, _: &mut Self::Context) {
        // Calls in flight died with the old context; their permits and counts go with them.
        self.in_use = 0;
        self.waiting.clear();
        for conn in &mut self.conns {
            conn.in_flight = 0;
        }
        self.publish();
    }
}

impl Handler<RetirePool> for McpPool {
    type Result = ();

    fn handle(&mut self, _: RetirePool, _: &mut Self::Context) {
        self.retiring = true;
        self.close_if_retired();
    }
}

impl Handler<CallTool> for McpPool {
    type Result = ResponseActFuture<Self, ToolOutcome>;

    fn handle(&mut self, msg: CallTool, _: &mut Self::Context) -> Self::Result {
        let CallTool {
            tool,
            arguments,
            reply,
            progress,
            asker,
            mut caller,
            queued,
        } = msg;
        drop(queued);
        if self.in_use < self.spec.max_concurrency {
            self.in_use += 1;
            return self.run(tool, arguments, reply, (progress, asker), caller);
        }
        // Wait for a permit (handed over by a finishing call), at most the call timeout.
        let (permit, granted) = oneshot::channel();
        self.waiting.push_back(permit);
        let timeout = self.spec.call_timeout;
        let wait = async move {
            let admitted = tokio::select! {
                granted = tokio::time::timeout(timeout, granted) => matches!(granted, Ok(Ok(()))),
                _ = &mut caller => false,
            };
            (admitted, caller)
        };
        Box::pin(wait.into_actor(self).then(move |(admitted, caller), act, _| {
            if admitted {
                act.run(tool, arguments, reply, (progress, asker), caller)
            } else {
                let busy = format!("MCP server `{}` is busy", act.spec.name);
                Box::pin(fut::ready(ToolOutcome::Failure(busy)))
            }
        }))
    }
}

impl Handler<ConnectionUp> for McpPool {
    type Result = ();

    fn handle(&mut self, msg: ConnectionUp, _: &mut Self::Context) {
        let Some(conn) = self.reported(msg.index, msg.generation) else {
            return;
        };
        conn.state = ConnState::Ready;
        conn.peer = Some(msg.peer);
        conn.link = msg.link;
        conn.tools = Arc::new(msg.tools);
        conn.protocol_version = Some(msg.protocol_version);
        conn.last_error = None;
        self.publish();
    }
}

impl Handler<ConnectionDown> for McpPool {
    type Result = ();

    fn handle(&mut self, msg: ConnectionDown, _: &mut Self::Context) {
        let Some(conn) = self.reported(msg.index, msg.generation) else {
            return;
        };
        conn.state = msg.state;
        conn.peer = None;
        if msg.reason.is_some() {
            conn.last_error = msg.reason;
        }
        self.publish();
    }
}

impl Handler<ToolsListed> for McpPool {
    type Result = ();

    fn handle(&mut self, msg: ToolsListed, _: &mut Self::Context) {
        if let Some(conn) = self.conns.get_mut(msg.index)
            && conn.generation == msg.generation
        {
            conn.tools = Arc::new(msg.tools);
            self.publish();
        }
    }
}

impl Handler<RefreshPool> for McpPool {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: RefreshPool, _: &mut Self::Context) -> Self::Result {
        let replies: Vec<_> = self
            .conns
            .iter()
            .filter_map(|c| c.addr.as_ref())
            .map(|addr| addr.send(Refresh))
            .collect();
        Box::pin(async move {
            let _ = futures::future::join_all(replies).await;
        })
    }
}

//! `McpConnection`: the actor that owns one connection to one MCP server: it connects (with a
//! handshake timeout), watches the connection, rebuilds it with jittered backoff when it dies,
//! and refreshes the tool list on `notifications/tools/list_changed`.
//!
//! It reports to its pool (`ConnectionUp` with the peer and tools, `ConnectionDown`,
//! `ToolsListed`); the pool sends calls on the peer, never through this actor's mailbox.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientRequest, ElicitRequestParams, ElicitResult, ElicitationCapability,
    FormElicitationCapability, Implementation, PingRequest, ProgressNotificationParam, ProtocolVersion, Tool,
    UrlElicitationCapability,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData, Peer, RoleClient};
use tokio::io::AsyncBufReadExt;

use super::config::{HttpMode, ServerSpec, Transport};
use super::pool::{ConnectionDown, ConnectionUp, ToolsListed};
use crate::elicitation::Question;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// First handshake in progress.
    Connecting,
    /// Serving calls.
    Ready,
    /// Lost; a new connection is on its way.
    Reconnecting,
    /// Never connected; retrying with backoff.
    Failed,
}

impl ConnState {
    /// The name shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Ready => "ready",
            ConnState::Reconnecting => "reconnecting",
            ConnState::Failed => "failed",
        }
    }
}

/// Rebuild the connection (sent by callers that saw a transport failure).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionLost {
    /// The generation the caller used; older reports are ignored.
    pub generation: u64,
    /// What the caller saw.
    pub reason: String,
}

/// The server said its tools changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToolsChanged {
    /// The connection it came from.
    pub generation: u64,
}

/// Re-list tools now (connect now if not ready); replies when done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

/// Closes the connection for good (its server was removed): the session ends, its process exits,
/// and it never reconnects.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseConnection;

/// Forwards server notifications into the actor.
#[derive(Clone)]
struct Notifications {
    addr: Addr<McpConnection>,
    generation: u64,
    server: String,
    /// This connection's name among all connections of the process (progress tokens are
    /// numbered per connection).
    link: u64,
    /// Whether the `elicitation` capability is declared.
    elicitation: bool,
}

impl ClientHandler for Notifications {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.addr.do_send(ToolsChanged {
            generation: self.generation,
        });
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        let note = super::progress::ProgressNote {
            progress: params.progress,
            total: params.total,
            message: params.message,
        };
        super::progress::deliver(self.link, &params.progress_token, note);
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let declined = || serde_json::from_value(serde_json::json!({"action": "decline"}));
        let question = serde_json::to_value(&request)
            .ok()
            .and_then(|params| Question::from_params("elicitation", &params));
        let answer = match question {
            // Not offered (the capability was not declared), or not a question we can show.
            _ if !self.elicitation => return declined().map_err(|e| ErrorData::internal_error(e.to_string(), None)),
            None => return Err(ErrorData::invalid_params("not a form or URL elicitation", None)),
            Some(question) => super::asking::ask(self.link, question).await,
        };
        serde_json::from_value(answer).map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    fn get_info(&self) -> ClientConfig {
        // The version `initialize` offers; `server/discover` offers the list of `lifecycle()`.
        let mut capabilities = ClientCapabilities::default();
        if self.elicitation {
            // Answers are checked against the schema before they are sent.
            capabilities.elicitation = Some(
                ElicitationCapability::new()
                    .with_form(FormElicitationCapability::new().with_schema_validation(true))
                    .with_url(UrlElicitationCapability::new()),
            );
        }
        ClientConfig::new(capabilities, Implementation::new("aichat", env!("CARGO_PKG_VERSION")))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Notifications({})", self.server)
    }
}

type Running = RunningService<RoleClient, Notifications>;

/// The connection actor.
pub struct McpConnection {
    spec: Arc<ServerSpec>,
    /// Its place in the pool.
    index: usize,
    pool_down: Recipient<ConnectionDown>,
    pool_up: Recipient<ConnectionUp>,
    pool_listed: Recipient<ToolsListed>,
    state: ConnState,
    peer: Option<Peer<RoleClient>>,
    attempt: u32,
    generation: u64,
    service: Option<SpawnHandle>,
    retry: Option<SpawnHandle>,
    pinger: Option<SpawnHandle>,
    /// Closed for good: never connects again.
    closed: bool,
}

impl McpConnection {
    /// Connection `index` of a pool to `spec`, reporting to the pool.
    pub fn new(
        spec: Arc<ServerSpec>,
        index: usize,
        pool_down: Recipient<ConnectionDown>,
        pool_up: Recipient<ConnectionUp>,
        pool_listed: Recipient<ToolsListed>,
    ) -> Self {
        Self {
            spec,
            index,
            pool_down,
            pool_up,
            pool_listed,
            state: ConnState::Connecting,
            peer: None,
            attempt: 0,
            generation: 0,
            service: None,
            retry: None,
            pinger: None,
            closed: false,
        }
    }

    fn report_down(&self, reason: Option<String>) {
        self.pool_down.do_send(ConnectionDown {
            index: self.index,
            generation: self.generation,
            state: self.state,
            reason,
        });
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        for handle in [self.service.take(), self.retry.take(), self.pinger.take()]
            .into_iter()
            .flatten()
        {
            // Dropping the old service's future closes it (and stops its child process).
            ctx.cancel_future(handle);
        }
        self.peer = None;
        if self.state == ConnState::Ready {
            self.state = ConnState::Reconnecting;
        }
        self.report_down(None);
        let link = super::progress::new_link();
        let notifications = Notifications {
            addr: ctx.address(),
            generation,
            server: self.spec.name.clone(),
            link,
            elicitation: self.spec.elicitation,
        };
        let spec = Arc::clone(&self.spec);
        let timeout = spec.connect_timeout;
        let attempt = async move {
            match tokio::time::timeout(timeout, establish(&spec, notifications)).await {
                Ok(result) => result,
                Err(_) => Err(format!("handshake timed out after {timeout:?}")),
            }
        };
        ctx.spawn(attempt.into_actor(self).map(move |result, act, ctx| {
            if generation != act.generation {
                return;
            }
            match result {
                Ok((running, tools)) => {
                    tracing::info!(server = %act.spec.name, tools = tools.len(), "MCP server ready");
                    act.attempt = 0;
                    act.state = ConnState::Ready;
                    act.peer = Some(running.peer().clone());
                    act.pool_up.do_send(ConnectionUp {
                        index: act.index,
                        generation,
                        link,
                        peer: running.peer().clone(),
                        tools,
                        protocol_version: running
                            .peer()
                            .peer_info()
                            .map(|info| info.protocol_version.to_string())
                            .unwrap_or_default(),
                    });
                    let watch = async move { running.waiting().await };
                    let handle = ctx.spawn(watch.into_actor(act).map(move |_, act, ctx| {
                        if generation == act.generation {
                            act.service = None;
                            act.lost("the connection closed".into(), ctx);
                        }
                    }));
                    act.service = Some(handle);
                    act.start_pinging(generation, ctx);
                }
                Err(reason) => act.lost(reason, ctx),
            }
        }));
    }

    fn lost(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.attempt = self.attempt.saturating_add(1);
        let delay = backoff(self.attempt);
        tracing::warn!(server = %self.spec.name, %reason, retry_in = ?delay, "MCP connection lost");
        self.peer = None;
        self.state = match self.state {
            ConnState::Ready | ConnState::Reconnecting => ConnState::Reconnecting,
            ConnState::Connecting | ConnState::Failed => ConnState::Failed,
        };
        self.report_down(Some(reason));
        for handle in [self.service.take(), self.retry.take(), self.pinger.take()]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(handle);
        }
        self.retry = Some(ctx.run_later(delay, |act, ctx| {
            act.retry = None;
            act.connect(ctx);
        }));
    }
}

impl McpConnection {
    /// Pings the server every `ping_every` while this generation of the connection lives; a ping
    /// without an answer in time means the server hangs: the connection is rebuilt (a stdio
    /// server's process is replaced), and its state stops saying `ready`.
    fn start_pinging(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let Some(every) = self.spec.ping_every else {
            return;
        };
        let limit = every.min(Duration::from_secs(10));
        self.pinger = Some(ctx.run_interval(every, move |act, ctx| {
            let Some(peer) = act.peer.clone().filter(|_| act.generation == generation) else {
                return;
            };
            let me = ctx.address();
            actix_rt::spawn(async move {
                let ping = peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
                let reason = match tokio::time::timeout(limit, ping).await {
                    Ok(Ok(_)) => return,
                    Ok(Err(err)) => format!("health ping failed: {err}"),
                    Err(_) => format!("no answer to a health ping within {} s", limit.as_secs()),
                };
                me.do_send(ConnectionLost { generation, reason });
            });
        }));
    }
}

/// Exponential backoff from 200 ms to 30 s with ±50 % jitter, so reconnecting clients spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(8)).min(30_000);
    let jittered = base / 2 + fastrand::u64(0..=base);
    Duration::from_millis(jittered)
}

/// Connects in both eras: `server/discover` offering the 2026-07-28 revision first (a server
/// that does not know it says so, and the `initialize` handshake follows on the same transport);
/// a server that answers the probe with something else (some answer any unknown request with
/// `{}`) is connected again, fresh, with `initialize` alone.
async fn establish(spec: &ServerSpec, notifications: Notifications) -> Result<(Running, Vec<Tool>), String> {
    match establish_with(spec, notifications.clone(), lifecycle()).await {
        Err(Handshake::ProbeMisread(reason)) => {
            tracing::info!(server = %spec.name, %reason, "the server misread server/discover; connecting with initialize");
            establish_with(spec, notifications, ClientLifecycleMode::Initialize)
                .await
                .map_err(Handshake::into_reason)
        }
        other => other.map_err(Handshake::into_reason),
    }
}

/// A failed handshake.
enum Handshake {
    /// The server answered the discover probe with something other than a discover result or
    /// "unsupported version": it predates the probe.
    ProbeMisread(String),
    /// Anything else, said.
    Failed(String),
}

impl Handshake {
    fn into_reason(self) -> String {
        match self {
            Handshake::ProbeMisread(reason) | Handshake::Failed(reason) => reason,
        }
    }

    fn of(err: &rmcp::service::ClientInitializeError, context: &str) -> Self {
        let reason = format!("handshake failed{context}: {}", handshake_failure(err));
        use rmcp::service::ClientInitializeError as E;
        // An answer that is neither a discover result nor "unsupported": an error of its own
        // (a server that refuses any request before `initialize`), or a result of another kind.
        if matches!(
            err,
            E::ExpectedInitResult(_)
                | E::ExpectedInitResponse(_)
                | E::JsonRpcError(_)
                | E::UncorrelatedErrorResponse { .. }
                | E::LegacyFallbackFailed { .. }
        ) {
            Handshake::ProbeMisread(reason)
        } else {
            Handshake::Failed(reason)
        }
    }
}

impl From<String> for Handshake {
    fn from(reason: String) -> Self {
        Handshake::Failed(reason)
    }
}

async fn establish_with(
    spec: &ServerSpec,
    notifications: Notifications,
    lifecycle: ClientLifecycleMode,
) -> Result<(Running, Vec<Tool>), Handshake> {
    let running = match &spec.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).envs(env).kill_on_drop(true);
            if let Some(dir) = cwd {
                cmd.current_dir(dir);
            }
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start `{command}`: {e}"))?;
            if let Some(stderr) = stderr {
                let server = spec.name.clone();
                actix_rt::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(server = %server, "stderr: {line}");
                    }
                });
            }
            notifications
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map_err(|e| Handshake::of(&e, ""))?
        }
        Transport::StreamableHttp { url, headers, mode } => {
            let mut configured = reqwest::header::HeaderMap::new();
            for (name, value) in headers {
                let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?;
                let value = reqwest::header::HeaderValue::from_str(value)
                    .map_err(|_| format!("invalid value for header {name}"))?;
                configured.insert(name, value);
            }
            // Every request to this server carries its headers, whichever transport it speaks.
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .default_headers(configured)
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
            let legacy = |notifications: Notifications, lifecycle: ClientLifecycleMode| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let transport = super::legacy_sse::connect(&client, &url, spec.connect_timeout).await?;
                    notifications
                        .serve_with_lifecycle(transport, lifecycle)
                        .await
                        .map_err(|e| Handshake::of(&e, " (legacy SSE)"))
                }
            };
            if *mode == HttpMode::LegacySse {
                legacy(notifications, lifecycle).await?
            } else {
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                let transport = StreamableHttpClientTransport::with_client(client.clone(), config);
                match notifications
                    .clone()
                    .serve_with_lifecycle(transport, lifecycle.clone())
                    .await
                {
                    Ok(running) => running,
                    // A server of the 2024-11-05 era refuses the POST: speak its transport.
                    Err(err) if *mode == HttpMode::Auto && refused_as_legacy(&err) => {
                        tracing::info!(server = %spec.name, "streamable HTTP refused; using the legacy HTTP+SSE transport");
                        legacy(notifications, lifecycle).await?
                    }
                    Err(err) => return Err(Handshake::of(&err, "")),
                }
            }
        }
    };
    let tools = running
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| Handshake::Failed(format!("tools/list failed: {e}")))?;
    Ok((running, tools))
}

impl Actor for McpConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
    }
}

impl Supervised for McpConnection {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.attempt = 0;
        self.service = None;
        self.retry = None;
        self.pinger = None;
    }
}

impl Handler<CloseConnection> for McpConnection {
    type Result = ();

    fn handle(&mut self, _: CloseConnection, ctx: &mut Self::Context) {
        self.closed = true;
        self.peer = None;
        // Stopping drops the service's future (the session closes, the child process exits). A
        // supervisor restart finds `closed` and stays idle until the last address is gone.
        ctx.stop();
    }
}

impl Handler<ConnectionLost> for McpConnection {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Self::Context) {
        if msg.generation == self.generation && self.state == ConnState::Ready {
            self.lost(msg.reason, ctx);
        }
    }
}

impl Handler<ToolsChanged> for McpConnection {
    type Result = ();

    fn handle(&mut self, msg: ToolsChanged, ctx: &mut Self::Context) {
        if msg.generation != self.generation {
            return;
        }
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let (pool, index, generation) = (self.pool_listed.clone(), self.index, self.generation);
        let server = self.spec.name.clone();
        ctx.spawn(
            async move {
                match tokio::time::timeout(Duration::from_secs(30), peer.list_all_tools()).await {
                    Ok(Ok(tools)) => {
                        tracing::info!(server = %server, tools = tools.len(), "MCP tools changed");
                        pool.do_send(ToolsListed {
                            index,
                            generation,
                            tools,
                        });
                    }
                    Ok(Err(err)) => tracing::warn!(server = %server, error = %err, "tools/list failed"),
                    Err(_) => tracing::warn!(server = %server, "tools/list timed out"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Refresh> for McpConnection {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Refresh, ctx: &mut Self::Context) -> Self::Result {
        let Some(peer) = self.peer.clone() else {
            self.attempt = 0;
            self.connect(ctx);
            return Box::pin(async {});
        };
        let (pool, index, generation) = (self.pool_listed.clone(), self.index, self.generation);
        Box::pin(async move {
            if let Ok(Ok(tools)) = tokio::time::timeout(Duration::from_secs(10), peer.list_all_tools()).await {
                // Waits until the pool has the list, so a refresh's caller sees it.
                let _ = pool
                    .send(ToolsListed {
                        index,
                        generation,
                        tools,
                    })
                    .await;
            }
        })
    }
}

/// Both eras: the 2026-07-28 revision first, then the older ones a server may pin; a server that
/// does not know `server/discover` gets `initialize` at 2025-11-25 (and may answer an older one).
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![
            ProtocolVersion::V_2026_07_28,
            ProtocolVersion::V_2025_11_25,
            ProtocolVersion::V_2025_06_18,
            ProtocolVersion::V_2025_03_26,
        ],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}

/// Whether a streamable-HTTP handshake was refused the way a legacy HTTP+SSE server refuses it:
/// the first POST answered 400, 404 or 405.
fn refused_as_legacy(err: &rmcp::service::ClientInitializeError) -> bool {
    match http_transport_error(err) {
        Some(StreamableHttpError::UnexpectedServerResponse(text)) => {
            ["HTTP 400", "HTTP 404", "HTTP 405"].iter().any(|s| text.starts_with(s))
        }
        Some(StreamableHttpError::HttpStatus(status)) => matches!(status.status, 400 | 404 | 405),
        _ => false,
    }
}

/// Why a handshake failed, down to the root cause (`… tcp connect error: Connection refused`):
/// rmcp's transport errors say their cause in their text but do not chain it, so the HTTP
/// client's error is taken out and its own chain followed.
fn handshake_failure(err: &rmcp::service::ClientInitializeError) -> String {
    let rmcp::service::ClientInitializeError::TransportError { error, context } = err else {
        return crate::cause::chain(err);
    };
    match http_transport_error(err) {
        Some(StreamableHttpError::Client(inner)) => format!("{context}: {}", crate::cause::chain(inner)),
        _ => format!("{context}: {}", crate::cause::chain(error)),
    }
}

/// The streamable-HTTP transport's own error inside a handshake failure, if that is what failed.
fn http_transport_error(err: &rmcp::service::ClientInitializeError) -> Option<&StreamableHttpError<reqwest::Error>> {
    match err {
        rmcp::service::ClientInitializeError::TransportError { error, .. } => error.error.downcast_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..40 {
            let d = backoff(attempt).as_millis() as u64;
            let base = 200u64.saturating_mul(1 << attempt.min(8)).min(30_000);
            assert!(d >= base / 2 && d <= base + base / 2, "attempt {attempt}: {d}");
        }
        assert!(backoff(30).as_millis() <= 45_000);
    }
}

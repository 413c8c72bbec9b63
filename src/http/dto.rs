//! Wire types of the HTTP API (JSON names as in the original PMM backend) and their conversions
//! from domain types.

use std::collections::HashMap;

use actors::model::{ChatMessage, Session, ToolExecution};
use chrono::{DateTime, Utc};

use super::error::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /send` body. `context` and `attachments` are accepted for compatibility and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatRequest {
    /// The person's message: not blank, at most `server.max_message_chars` characters.
    #[serde(default)]
    #[schema(value_type = String, required = true, min_length = 1, pattern = r"\S")]
    pub message: Option<String>,
    /// The session to continue; absent, unknown or foreign ids start a new session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub context: Option<HashMap<String, String>>,
    /// A configured provider to use for this turn (else the default).
    #[serde(default)]
    pub provider: Option<String>,
    /// Ignored (files go through `/send-with-files`).
    #[serde(default)]
    pub attachments: Option<Vec<serde_json::Value>>,
}

/// `POST /send` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// `true` for the two-step streaming flow: the reply names a stream to read.
    #[serde(default)]
    #[param(value_type = Option<bool>)]
    pub streaming: Option<String>,
}

/// A boolean query flag as the document types it: `true`, `false`, or absent (false); anything
/// else, an empty value included, is refused (schemathesis found `?streaming=` taken as false).
pub fn flag(name: &'static str, raw: Option<&str>) -> Result<bool, ApiError> {
    match raw {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::InvalidParameter {
            name,
            reason: "expected true or false".into(),
        }),
    }
}

impl SendQuery {
    /// Whether the client asked for a stream.
    pub fn streaming(&self) -> Result<bool, ApiError> {
        flag("streaming", self.streaming.as_deref())
    }
}

/// `POST /send?streaming=true` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamStarted {
    /// The stream to read.
    pub stream_id: String,
    /// The real session id.
    pub session_id: String,
    /// `/v1/chat/stream/<stream_id>`.
    pub stream_url: String,
}

impl From<&actors::session::TurnStarted> for StreamStarted {
    fn from(started: &actors::session::TurnStarted) -> Self {
        Self {
            stream_url: format!("/v1/chat/stream/{}", started.stream_id),
            stream_id: started.stream_id.to_string(),
            session_id: started.session_id.to_string(),
        }
    }
}

/// A tool's question that waits for the person.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingElicitation {
    /// Answer it with `POST /v1/chat/elicitations/{request_id}`.
    pub request_id: String,
    /// Its session.
    pub session_id: String,
    /// The stream that asked it.
    pub stream_id: String,
    /// The call that asks.
    pub tool_call_id: String,
    /// Its tool.
    pub tool_name: String,
    /// The question.
    pub question: actors::elicitation::Question,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When it counts as `cancel`.
    pub expires_at: DateTime<Utc>,
}

impl PendingElicitation {
    /// The question an elicitation asks now, if any.
    pub fn of(record: &actors::approval::ApprovalRecord) -> Option<Self> {
        let (i, question) = record.asking()?;
        let call = &record.calls[i].call;
        Some(Self {
            request_id: record.request_id.clone(),
            session_id: record.session_id.to_string(),
            stream_id: record.stream_id.to_string(),
            tool_call_id: call.id.clone(),
            tool_name: call.function.name.clone(),
            question: question.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
        })
    }
}

/// `GET /elicitations` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingElicitations {
    /// Newest first.
    pub elicitations: Vec<PendingElicitation>,
}

/// The assistant's collected answer of a non-streaming send.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectedMessage {
    /// `collected_<uuid>`.
    pub id: String,
    /// `assistant`.
    pub role: &'static str,
    /// All text of the turn.
    pub content: String,
    /// When the answer was complete.
    pub timestamp: DateTime<Utc>,
    /// Tools run during the turn, in call order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_executions: Vec<ToolExecution>,
    /// When the turn ended waiting for approval: the request to decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_request: Option<actors::model::ApprovalRequestView>,
    /// When the turn ended on a tool's question for the person: the question to answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<actors::answer::ElicitationView>)]
    pub elicitation_request: Option<Box<actors::answer::ElicitationView>>,
}

impl From<actors::answer::Answer> for CollectedMessage {
    fn from(answer: actors::answer::Answer) -> Self {
        Self {
            id: actors::ids::prefixed_id("collected"),
            role: "assistant",
            content: answer.content,
            timestamp: actors::model::now(),
            tool_executions: answer.tool_executions,
            approval_request: answer.approval_request,
            elicitation_request: answer.elicitation_request.map(Box::new),
        }
    }
}

/// `POST /send` reply (non-streaming).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    /// The answer.
    pub message: CollectedMessage,
    /// The real session id.
    pub session_id: String,
}

/// `POST /send` 200 reply: the answer, or with `?streaming=true` the stream to read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ChatOrStream {
    /// Non-streaming.
    Answer(ChatResponse),
    /// Streaming.
    Stream(StreamStarted),
}

/// A session as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionDto {
    /// Its id.
    pub id: String,
    /// Its owner, as a string (as in the original).
    pub user_id: String,
    /// Its title.
    pub title: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last activity.
    pub updated_at: DateTime<Utc>,
}

impl From<Session> for SessionDto {
    fn from(s: Session) -> Self {
        Self {
            id: s.id.to_string(),
            user_id: s.user_id.to_string(),
            title: s.title,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// `?page=&limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page, from 1 (a value below 1 means 1; above 4,294,967,295 is refused).
    #[param(value_type = Option<i64>, maximum = 4_294_967_295_i64)]
    pub page: Option<String>,
    /// Rows per page, 1 to 100 (a value outside that range means the route's default).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// Paging as returned (the original's keys plus `total` where known).
#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    /// The page.
    pub page: u32,
    /// Its size.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u64,
    /// All rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// `GET /sessions` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsPage {
    /// The sessions.
    pub sessions: Vec<SessionDto>,
    /// Paging.
    pub pagination: Pagination,
}

/// `GET /sessions/{id}/messages` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesPage {
    /// The messages, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Paging.
    pub pagination: Pagination,
}

/// `POST /sessions` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TitleRequest {
    /// The title (at most 255 characters); absent or blank gives the default title, which the
    /// first exchange may replace.
    #[serde(default)]
    #[schema(max_length = 255)]
    pub title: Option<String>,
}

/// `PUT /sessions/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TitleUpdate {
    /// The new title (1 to 255 characters, not blank); it is never replaced automatically.
    #[serde(default)]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 255, pattern = r"\S")]
    pub title: Option<String>,
}

/// `DELETE /clear` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClearQuery {
    /// The session to clear.
    #[param(value_type = String, required = true, min_length = 1)]
    pub session_id: Option<String>,
}

/// `GET /stream/{id}` query, for clients that cannot set `Last-Event-ID`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event id (the `Last-Event-ID` header wins when both are given).
    #[param(value_type = Option<u64>)]
    pub last_event_id: Option<String>,
}

/// `GET /stream` (legacy) query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LegacyStreamQuery {
    /// The message (required), or an in-band `[APPROVE_TOOLS:<id>]` / `[DENY_TOOLS:<id>]`.
    #[param(value_type = String, required = true, min_length = 1, pattern = r"\S")]
    pub message: Option<String>,
    /// The session (empty or unknown: a new one).
    pub session_id: Option<String>,
}

/// `POST /send-with-files` form (`multipart/form-data`).
#[derive(Debug, ToSchema)]
pub struct FilesForm {
    /// The person's message: not blank, at most `server.max_message_chars` characters.
    #[schema(min_length = 1, pattern = r"\S")]
    pub message: String,
    /// The session to continue; absent, unknown or foreign ids start a new session.
    pub session_id: Option<String>,
    /// A configured provider to use for this turn (else the default).
    pub provider: Option<String>,
    /// A file (the UI sends `file0..fileN`): an image, a PDF or UTF-8 text.
    #[schema(value_type = Option<String>, format = Binary)]
    pub file0: Option<Vec<u8>>,
}

/// `GET /mcp/tools` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ToolsQuery {
    /// Re-list every server's tools (and reconnect the servers that are down) before answering.
    #[param(value_type = Option<bool>)]
    pub force_refresh: Option<String>,
}

/// A confirmation body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Confirmation {
    /// What happened.
    pub message: &'static str,
}

/// Every error body: the original's `error` text plus a stable `code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs (`session_not_found`, `too_many_turns`, ...).
    pub code: String,
}

/// `POST /stream/{id}/cancel` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// `Turn cancelled`.
    pub message: &'static str,
    /// The stream.
    pub stream_id: String,
}

/// `GET /health` reply: the original's `status`, `timestamp`, `version`, plus components.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when storage does not answer.
    pub status: &'static str,
    /// Now, RFC 3339.
    pub timestamp: String,
    /// The server's version.
    pub version: &'static str,
    /// `ok` or `unavailable`.
    pub storage: &'static str,
    /// Each provider and its circuit breaker.
    pub providers: Vec<actors::provider::ProviderStatus>,
    /// Whether the server is shutting down.
    pub draining: bool,
    /// Streams held in memory (running, or ended and still replayable).
    pub streams_in_memory: usize,
    /// Session actors in memory (each holds its session's history); null if the registry did
    /// not answer.
    pub session_actors: Option<usize>,
    /// Each MCP server's state.
    pub mcp_servers: Vec<McpServerState>,
    /// This node among several on one PostgreSQL database; absent on SQLite (single-node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeState>,
}

/// This node's place in a cluster, as `/health` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeState {
    /// Its id in the leases it holds.
    pub id: String,
    /// Turns running on it now (it holds their sessions' leases).
    pub turns_running: usize,
    /// Streams of other nodes' turns it follows for readers here.
    pub streams_followed: usize,
}

/// An MCP server's name and state, as `/health` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpServerState {
    /// Its name.
    pub name: String,
    /// `ready`, `connecting`, `backoff`, `failed`, ...
    pub state: &'static str,
}

/// `GET /ready` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Whether the server takes requests.
    pub ready: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// `shutting_down` or `not_ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

/// A tool as `GET /mcp/tools` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolDto {
    /// The name the model sees: `<server>__<tool>`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its arguments' JSON Schema.
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    /// The MCP server offering it.
    pub server: String,
    /// Its name on that server.
    pub tool: String,
    /// The server's annotations (`readOnlyHint`, ...), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub annotations: Option<serde_json::Value>,
}

/// `GET /mcp/tools` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolsList {
    /// The tools.
    pub tools: Vec<ToolDto>,
    /// Present (`true`) when the list was refreshed first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_refresh: Option<bool>,
}

/// A provider a person may name in a message (`provider`), as `GET /providers` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderDto {
    /// Its name.
    pub name: String,
    /// `mock`, `openai`, `anthropic`, `gemini` or `ollama`.
    pub vendor: String,
    /// The model it answers with.
    pub model: String,
    /// Whether it answers when a message names none.
    pub default: bool,
    /// `ok`, or `unhealthy` while its circuit breaker is open.
    pub status: String,
}

/// `GET /providers` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvidersList {
    /// The providers, the default first.
    pub providers: Vec<ProviderDto>,
}

/// `GET /mcp/servers` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServersList {
    /// The servers.
    pub servers: Vec<actors::mcp::ServerStatus>,
}

/// An approval request as `GET /approvals` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalDto {
    /// `approval_<uuid>`.
    pub request_id: String,
    /// Its session.
    pub session_id: String,
    /// The stream that asked.
    pub stream_id: String,
    /// `pending`, `approved`, `denied`, `partially_approved`, `expired`, `superseded`.
    pub status: actors::approval::ApprovalStatus,
    /// Every call of the model's batch, in call order, with its state.
    pub tool_calls: Vec<actors::approval::BatchCall>,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When it expires (counting as denied).
    pub expires_at: DateTime<Utc>,
    /// Who decided (`user:<id>`, `expiry`, `superseded`).
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
}

/// `GET /approvals` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalsList {
    /// Newest first.
    pub approvals: Vec<ApprovalDto>,
}

/// `GET /grants` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantsList {
    /// The user's "always allow" grants.
    pub grants: Vec<actors::approval::Grant>,
}

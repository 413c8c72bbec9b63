//! Wire types of the HTTP API (JSON names as in the original PMM backend) and their conversions
//! from domain types.

use std::collections::HashMap;

use actors::model::{ChatMessage, Session, ToolExecution};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /send` body. `context` and `attachments` are accepted for compatibility and ignored.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The person's message (required).
    #[serde(default)]
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
    /// Ignored until `/send-with-files` lands.
    #[serde(default)]
    pub attachments: Option<Vec<serde_json::Value>>,
}

/// `POST /send` query.
#[derive(Debug, Deserialize)]
pub struct SendQuery {
    /// `true` (or `1`) for the two-step streaming flow.
    #[serde(default)]
    pub streaming: Option<String>,
}

impl SendQuery {
    /// Whether the client asked for a stream.
    pub fn streaming(&self) -> bool {
        self.streaming.as_deref().is_some_and(|v| v == "true" || v == "1")
    }
}

/// `POST /send?streaming=true` reply.
#[derive(Debug, Serialize)]
pub struct StreamStarted {
    /// The stream to read.
    pub stream_id: String,
    /// The real session id.
    pub session_id: String,
    /// `/v1/chat/stream/<stream_id>`.
    pub stream_url: String,
}

/// The assistant's collected answer of a non-streaming send.
#[derive(Debug, Serialize)]
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
}

/// `POST /send` reply (non-streaming).
#[derive(Debug, Serialize)]
pub struct ChatResponse {
    /// The answer.
    pub message: CollectedMessage,
    /// The real session id.
    pub session_id: String,
}

/// A session as the API shows it.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// From 1.
    pub page: Option<String>,
    /// Rows per page.
    pub limit: Option<String>,
}

/// Paging as returned (the original's keys plus `total` where known).
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
pub struct SessionsPage {
    /// The sessions.
    pub sessions: Vec<SessionDto>,
    /// Paging.
    pub pagination: Pagination,
}

/// `GET /sessions/{id}/messages` reply.
#[derive(Debug, Serialize)]
pub struct MessagesPage {
    /// The messages, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Paging.
    pub pagination: Pagination,
}

/// `POST /sessions` and `PUT /sessions/{id}` body.
#[derive(Debug, Deserialize)]
pub struct TitleRequest {
    /// The title.
    #[serde(default)]
    pub title: Option<String>,
}

/// `DELETE /clear` query.
#[derive(Debug, Deserialize)]
pub struct ClearQuery {
    /// The session to clear.
    pub session_id: Option<String>,
}

/// `GET /stream/{id}` query, for clients that cannot set `Last-Event-ID`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Resume after this event id.
    pub last_event_id: Option<String>,
}

/// `GET /mcp/tools` query.
#[derive(Debug, Deserialize)]
pub struct ToolsQuery {
    /// Reconnect before listing.
    pub force_refresh: Option<String>,
}

/// A confirmation body.
#[derive(Debug, Serialize)]
pub struct Confirmation {
    /// What happened.
    pub message: &'static str,
}

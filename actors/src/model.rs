//! The domain vocabulary: messages, tool calls and executions, sessions, and the `StreamMessage`
//! events a turn emits. JSON names follow the original PMM backend exactly.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{SessionId, UserId};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The system prompt.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool result fed back to the model.
    Tool,
    /// An approval request shown to the person (kept for the original UI).
    ToolApproval,
}

impl Role {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::ToolApproval => "tool_approval",
        }
    }

    /// Parses a stored role name.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "tool_approval" => Role::ToolApproval,
            _ => return None,
        })
    }
}

/// The function part of a tool call; `arguments` is a JSON **string**, as in the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FunctionCall {
    /// The tool's name as the model sees it.
    pub name: String,
    /// The arguments as a JSON text.
    pub arguments: String,
}

/// One tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolCall {
    /// The call id (the vendor's, or one we generate).
    pub id: String,
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name and arguments.
    pub function: FunctionCall,
    /// Gemini's thought signature, sent back exactly where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
}

impl ToolCall {
    /// A function call with the given id, name and JSON arguments.
    pub fn function(id: impl Into<String>, name: impl Into<String>, arguments: String) -> Self {
        Self {
            id: id.into(),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
            thought_signature: None,
        }
    }
}

/// The outcome of one tool call, in the original's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolExecution {
    /// The tool call's id.
    pub id: String,
    /// The tool's name.
    pub tool_name: String,
    /// The arguments as JSON text.
    pub arguments: String,
    /// The result text (always present; on failure `Error executing tool: …`).
    pub result: String,
    /// The failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the call started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub end_time: DateTime<Utc>,
    /// `end_time - start_time` in milliseconds.
    pub duration_ms: i64,
}

/// Token counts a vendor reported for one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// One stored message of a session: the unit of history and of the model's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `user_<uuid>`, `assistant_<uuid>`, `tool_<uuid>`, ...
    pub id: String,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// When it was written.
    pub timestamp: DateTime<Utc>,
    /// Tool calls the assistant requested in this message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the executions it reports (one per message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_executions: Vec<ToolExecution>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Token usage of the model call that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// For a `tool_approval` message: the request and its current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_request: Option<ApprovalRequestView>,
    /// For a partial answer: `cancelled` (stopped by the person) or `interrupted` (the server
    /// stopped); absent for complete messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// For a `user` message: the files sent with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::attachment::Attachment>,
}

impl ChatMessage {
    /// A new message with a fresh id of the form `<role>_<uuid>`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            id: crate::ids::prefixed_id(role.as_str()),
            role,
            content: content.into(),
            timestamp: now(),
            tool_calls: Vec::new(),
            tool_executions: Vec::new(),
            tool_call_id: None,
            usage: None,
            approval_request: None,
            status: None,
            attachments: Vec::new(),
        }
    }

    /// A `tool` message carrying one execution: `content` is what the model sees (`for_model`),
    /// the execution keeps the full result.
    pub fn tool_result(execution: ToolExecution, for_model: String) -> Self {
        let mut message = Self::new(Role::Tool, for_model);
        message.tool_call_id = Some(execution.id.clone());
        message.tool_executions = vec![execution];
        message
    }
}

/// An approval request as shown in a session's messages (the original's `approval_request`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalRequestView {
    /// `approval_<uuid>`.
    pub request_id: String,
    /// The calls waiting for a decision.
    pub tool_calls: Vec<ToolCall>,
    /// `pending`, `approved`, `denied`, `partially_approved`, `expired`, `superseded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Whether it was decided (the original's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<bool>,
}

/// Where a session's title came from; only `Default` titles may be replaced automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TitleSource {
    /// Set by the server when the session was created.
    Default,
    /// Generated by the model after the first exchange.
    Generated,
    /// Set by the person; never overwritten.
    User,
}

impl TitleSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TitleSource::Default => "default",
            TitleSource::Generated => "generated",
            TitleSource::User => "user",
        }
    }

    /// Parses a stored name (unknown names count as `User`, the safe choice).
    pub fn parse(raw: &str) -> Self {
        match raw {
            "default" => TitleSource::Default,
            "generated" => TitleSource::Generated,
            _ => TitleSource::User,
        }
    }
}

/// A chat session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Its owner.
    pub user_id: UserId,
    /// Its title.
    pub title: String,
    /// Who set the title.
    pub title_source: TitleSource,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change (new message, rename).
    pub updated_at: DateTime<Utc>,
}

impl Session {
    /// A new session with a server-generated id.
    pub fn new(user_id: UserId, title: String, title_source: TitleSource) -> Self {
        let now = now();
        Self {
            id: SessionId::generate(),
            user_id,
            title,
            title_source,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The `type` of a [`StreamMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamMessageType {
    /// A text delta, or a status line from the server.
    Message,
    /// Internal to the original; never sent to clients.
    ToolCall,
    /// Tool results of one round, in call order.
    ToolExecution,
    /// Tools wait for the person's decision.
    ToolApprovalRequest,
    /// The turn failed (terminal).
    Error,
    /// The turn ended (terminal).
    Done,
    /// A running tool said how far it got (`notifications/progress`). Sent under its own SSE
    /// event name, `tool_progress`, which clients of the original (reading `message` events only)
    /// never see.
    ToolProgress,
    /// A tool's server asks the person something (always followed by `done`; answered with
    /// `POST /v1/chat/elicitations/{request_id}`). Sent under its own SSE event name,
    /// `elicitation_request`.
    ElicitationRequest,
}

/// One event of a stream, as the SSE `data:` JSON (the original's `StreamMessage`, plus `code`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamMessage {
    /// What this event is.
    #[serde(rename = "type")]
    pub kind: StreamMessageType,
    /// Text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The real session id, always.
    pub session_id: SessionId,
    /// Error text for `error` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A stable snake_case error code for `error` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Set on terminal events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<bool>,
    /// Tool calls (approval requests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tool executions of one round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_executions: Vec<ToolExecution>,
    /// The approval request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `tool_progress`: the call it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// `tool_progress`: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// `tool_progress`: progress so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// `tool_progress`: the total, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// `elicitation_request`: what the tool's server asks (boxed: every text delta is a
    /// `StreamMessage` too, and stays small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::elicitation::Question>)]
    pub question: Option<Box<crate::elicitation::Question>>,
}

impl StreamMessage {
    fn empty(kind: StreamMessageType, session_id: &SessionId) -> Self {
        Self {
            kind,
            content: None,
            session_id: session_id.clone(),
            error: None,
            code: None,
            done: None,
            tool_calls: Vec::new(),
            tool_executions: Vec::new(),
            request_id: None,
            tool_call_id: None,
            tool_name: None,
            progress: None,
            total: None,
            question: None,
        }
    }

    /// A text delta.
    pub fn text(session_id: &SessionId, content: impl Into<String>) -> Self {
        Self {
            content: Some(content.into()),
            ..Self::empty(StreamMessageType::Message, session_id)
        }
    }

    /// Tools wait for the person's decision (always followed by `done`).
    pub fn approval_request(session_id: &SessionId, request_id: &str, calls: Vec<ToolCall>) -> Self {
        Self {
            content: Some(format!(
                "🔧 The assistant wants to execute {} tool(s). Do you approve?",
                calls.len()
            )),
            tool_calls: calls,
            request_id: Some(request_id.to_owned()),
            ..Self::empty(StreamMessageType::ToolApprovalRequest, session_id)
        }
    }

    /// The results of one tool round, in call order.
    pub fn tool_execution(session_id: &SessionId, executions: Vec<ToolExecution>) -> Self {
        let failed = executions.iter().any(|e| e.error.is_some());
        let status = if failed { "partially failed" } else { "successful" };
        Self {
            content: Some(format!("Executed {} tool(s) ({status})", executions.len())),
            tool_executions: executions,
            ..Self::empty(StreamMessageType::ToolExecution, session_id)
        }
    }

    /// What a running tool said of its progress (`content`: its message, if any).
    pub fn tool_progress(
        session_id: &SessionId,
        call: &ToolCall,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    ) -> Self {
        Self {
            content: message,
            tool_call_id: Some(call.id.clone()),
            tool_name: Some(call.function.name.clone()),
            progress: Some(progress),
            total,
            ..Self::empty(StreamMessageType::ToolProgress, session_id)
        }
    }

    /// A tool's server asks the person (`content`: its message; always followed by `done`).
    pub fn elicitation_request(
        session_id: &SessionId,
        request_id: &str,
        call: &ToolCall,
        question: crate::elicitation::Question,
    ) -> Self {
        Self {
            content: Some(question.message.clone()),
            request_id: Some(request_id.to_owned()),
            tool_call_id: Some(call.id.clone()),
            tool_name: Some(call.function.name.clone()),
            question: Some(Box::new(question)),
            ..Self::empty(StreamMessageType::ElicitationRequest, session_id)
        }
    }

    /// The `type` of an event's JSON as this server writes it, read off its start (`type` is
    /// the first field a `StreamMessage` serialises): no parse per event on the paths that only
    /// need the kind (replay, followed streams, the SSE event name).
    pub fn json_kind(data: &str) -> Option<&str> {
        let rest = data.strip_prefix(r#"{"type":""#)?;
        rest.split_once('"').map(|(kind, _)| kind)
    }

    /// Whether an event's JSON ends its stream (`done` or `error`).
    pub fn is_terminal_json(data: &str) -> bool {
        matches!(Self::json_kind(data), Some("done" | "error"))
    }

    /// The SSE `event:` name of an event's JSON: the kinds the original did not have travel
    /// under their own name (`tool_progress`, `elicitation_request`), every other one as
    /// `message` (all the original's clients read).
    pub fn sse_event_name(data: &str) -> &'static str {
        match Self::json_kind(data) {
            Some("tool_progress") => "tool_progress",
            Some("elicitation_request") => "elicitation_request",
            _ => "message",
        }
    }

    /// The terminal success event.
    pub fn done(session_id: &SessionId) -> Self {
        Self {
            done: Some(true),
            ..Self::empty(StreamMessageType::Done, session_id)
        }
    }

    /// The terminal failure event.
    pub fn error(session_id: &SessionId, code: &str, text: impl Into<String>) -> Self {
        Self {
            error: Some(text.into()),
            code: Some(code.to_owned()),
            done: Some(true),
            ..Self::empty(StreamMessageType::Error, session_id)
        }
    }

    /// Whether the stream ends with this event.
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind, StreamMessageType::Done | StreamMessageType::Error)
    }
}

/// The current time at the precision storage keeps (microseconds), so stored equals in-memory.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Formats a time as stored: RFC 3339, UTC, microseconds, so that text order is time order.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    /// `json_kind` reads `type` off the start of the JSON: every kind of event serialises it first.
    #[test]
    fn every_event_kind_is_read_off_the_start_of_its_json() {
        use crate::ids::SessionId;
        let s = SessionId::from_raw("s");
        let call = ToolCall::function("c1", "t", "{}".to_owned());
        let events = [
            StreamMessage::text(&s, "x"),
            StreamMessage::done(&s),
            StreamMessage::error(&s, "cancelled", "stopped"),
            StreamMessage::tool_execution(&s, Vec::new()),
            StreamMessage::approval_request(&s, "r", vec![call.clone()]),
            StreamMessage::tool_progress(&s, &call, 1.0, Some(2.0), None),
            StreamMessage::elicitation_request(
                &s,
                "elicitation_1",
                &call,
                crate::elicitation::Question::from_params("k", &serde_json::json!({"message": "?"}))
                    .expect("a question"),
            ),
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(StreamMessage::json_kind(&json), parsed["type"].as_str(), "{json}");
            assert_eq!(StreamMessage::is_terminal_json(&json), event.is_terminal(), "{json}");
        }
        assert_eq!(StreamMessage::json_kind("not json"), None);
    }

    use super::*;

    #[test]
    fn stream_message_json_keeps_the_original_keys() {
        let session = SessionId::from_raw("s1");
        let json = serde_json::to_value(StreamMessage::text(&session, "hi")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "message", "content": "hi", "session_id": "s1"})
        );
        let json = serde_json::to_value(StreamMessage::done(&session)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "done", "session_id": "s1", "done": true})
        );
    }

    #[test]
    fn roles_round_trip() {
        for role in [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::ToolApproval,
        ] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("robot"), None);
    }
}

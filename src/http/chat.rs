//! Chat routes: `POST /send` (streaming and not), `GET /stream/{stream_id}` (SSE) and
//! `DELETE /clear`.

use std::convert::Infallible;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use actix_web_lab::sse::{self, Sse};
use actors::approval::{Decision, Remember};
use actors::ids::{SessionId, StreamId};
use actors::model::{ApprovalRequestView, StreamMessage, StreamMessageType, now};
use actors::session::TurnStarted;
use actors::stream::StreamBuffer;
use futures::stream::{self, Stream, StreamExt};

use super::AppState;
use super::auth::AuthUser;
use super::body::JsonObject;
use super::dto::{
    Cancelled, ChatOrStream, ChatRequest, ChatResponse, ClearQuery, CollectedMessage, Confirmation, ErrorBody,
    LegacyStreamQuery, SendQuery, StreamQuery, StreamStarted,
};
use super::error::{ApiError, ProviderFailure};

/// The message of a send: required, at most `limit` characters.
pub fn message_text(message: Option<&str>, limit: usize) -> Result<String, ApiError> {
    let text = message.unwrap_or("");
    if text.trim().is_empty() {
        return Err(ApiError::MissingField("message"));
    }
    let len = text.chars().count();
    if len > limit {
        return Err(ApiError::MessageTooLong { len, limit });
    }
    Ok(text.to_owned())
}

/// `[APPROVE_TOOLS:<id>]` or `[DENY_TOOLS:<id>]`, exactly, as the original UI sends them.
fn in_band_decision(text: &str) -> Option<(&str, bool)> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    if let Some(id) = inner.strip_prefix("APPROVE_TOOLS:") {
        return Some((id, true));
    }
    inner.strip_prefix("DENY_TOOLS:").map(|id| (id, false))
}

/// Sends a message and answers it: with `?streaming=true` at once with the stream to read,
/// otherwise with the whole answer once the turn ends. `[APPROVE_TOOLS:<id>]` and
/// `[DENY_TOOLS:<id>]` decide an approval request instead of starting a turn.
#[utoipa::path(
    tag = "chat",
    params(SendQuery),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer (non-streaming: `ChatResponse`) or the stream to read (`StreamStarted`)",
            body = ChatOrStream),
        (status = 404, description = "`approval_not_found`: an in-band decision names no request of this user", body = ErrorBody),
        (status = 409, description = "`turn_in_progress`, or an in-band decision on a decided or expired request", body = ErrorBody),
        (status = 429, description = "`too_many_turns`, with `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a turn may start"))),
        (status = 502, description = "The model provider failed (non-streaming)", body = ErrorBody),
        (status = 504, description = "The provider or the whole answer took too long (non-streaming)", body = ErrorBody),
    )
)]
#[post("/send")]
pub async fn send(
    user: AuthUser,
    query: web::Query<SendQuery>,
    body: JsonObject<ChatRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let streaming = query.streaming()?;
    let text = message_text(body.message.as_deref(), state.limits.max_message_chars)?;
    let submission = Submission {
        text,
        session_id: body.session_id.clone(),
        provider: body.provider.clone(),
        attachments: Vec::new(),
    };
    let started = start(user, submission, &state).await?;
    answer(started, streaming, &state).await
}

/// A message to send, from `/send`, `/send-with-files` or the legacy `GET /stream`.
pub struct Submission {
    /// The text (or an in-band `[APPROVE_TOOLS:<id>]` / `[DENY_TOOLS:<id>]`).
    pub text: String,
    /// The session the client named (empty: a new one).
    pub session_id: Option<String>,
    /// A provider the client named (empty: the default).
    pub provider: Option<String>,
    /// Files sent with it.
    pub attachments: Vec<actors::attachment::Attachment>,
}

/// Starts the turn a submission asks for: an in-band approval decision, or a new message.
pub async fn start(user: AuthUser, submission: Submission, state: &AppState) -> Result<TurnStarted, ApiError> {
    let session_id = submission
        .session_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(SessionId::from_raw);
    if let Some((request_id, approved)) = in_band_decision(&submission.text) {
        if !submission.attachments.is_empty() {
            return Err(ApiError::InvalidParameter {
                name: "message",
                reason: "an approval decision carries no files".into(),
            });
        }
        // The original UI decides approvals with these messages; they are not stored as messages.
        let decision = Decision {
            approved,
            approved_ids: None,
            remember: Remember::None,
        };
        return Ok(state
            .chat
            .decide(user.0, request_id, session_id.as_ref(), decision)
            .await?);
    }
    state.turns.admit(user.0, state.chat.hub())?;
    let provider = submission.provider.filter(|p| !p.is_empty());
    if let Some(name) = &provider
        && !state.providers.contains(name)
    {
        return Err(ApiError::InvalidParameter {
            name: "provider",
            reason: format!("no provider named {name:?}"),
        });
    }
    Ok(state
        .chat
        .submit(user.0, session_id, submission.text, submission.attachments, provider)
        .await?)
}

/// Answers a send: with `streaming` at once with the stream to read, otherwise with the whole
/// answer once the turn ends.
pub async fn answer(started: TurnStarted, streaming: bool, state: &AppState) -> Result<HttpResponse, ApiError> {
    if streaming {
        return Ok(HttpResponse::Ok().json(StreamStarted::from(&started)));
    }
    let collect = collect_answer(started.stream);
    let message = tokio::time::timeout(state.limits.send_timeout, collect)
        .await
        .map_err(|_| ApiError::SendTimeout)??;
    Ok(HttpResponse::Ok().json(ChatResponse {
        message,
        session_id: started.session_id.to_string(),
    }))
}

/// Reads a stream to its end and folds it into one assistant message.
async fn collect_answer(buffer: Arc<StreamBuffer>) -> Result<CollectedMessage, ApiError> {
    let mut reader = buffer.subscribe(0);
    let mut content = String::new();
    let mut tool_executions = Vec::new();
    let mut approval_request = None;
    while let Some(batch) = reader.next_batch().await {
        for event in batch {
            let Ok(message) = serde_json::from_str::<StreamMessage>(&event.data) else {
                continue;
            };
            match message.kind {
                StreamMessageType::Message => content.push_str(message.content.as_deref().unwrap_or("")),
                StreamMessageType::ToolExecution => tool_executions.extend(message.tool_executions),
                StreamMessageType::Error => {
                    let code = message.code.unwrap_or_else(|| "upstream_error".into());
                    if code == "storage_unavailable" {
                        return Err(ApiError::Storage);
                    }
                    return Err(ApiError::Provider(ProviderFailure {
                        code,
                        message: message.error.unwrap_or_default(),
                    }));
                }
                StreamMessageType::ToolApprovalRequest => {
                    // As the original: the prompt joins the content; the request is given too.
                    content.push_str(message.content.as_deref().unwrap_or(""));
                    approval_request = message.request_id.map(|request_id| ApprovalRequestView {
                        request_id,
                        tool_calls: message.tool_calls,
                        status: Some("pending".into()),
                        processed: Some(false),
                    });
                }
                StreamMessageType::Done | StreamMessageType::ToolCall => {}
            }
        }
    }
    Ok(CollectedMessage {
        id: actors::ids::prefixed_id("collected"),
        role: "assistant",
        content,
        timestamp: now(),
        tool_executions,
        approval_request,
    })
}

fn last_event_id(req: &HttpRequest, query: &StreamQuery) -> Result<u64, ApiError> {
    let header = req.headers().get("Last-Event-ID").and_then(|v| v.to_str().ok());
    match header.or(query.last_event_id.as_deref()) {
        None => Ok(0),
        Some(raw) if raw.trim().is_empty() => Ok(0),
        Some(raw) => raw.trim().parse().map_err(|_| ApiError::InvalidParameter {
            name: "Last-Event-ID",
            reason: "expected a non-negative integer".into(),
        }),
    }
}

/// Cancels a turn whose last reader went away, unless one comes back within `grace`
/// (`server.cancel_on_disconnect_secs`; 0 keeps the turn running, ready for resume).
pub struct DisconnectGuard {
    chat: actors::Chat,
    user: actors::ids::UserId,
    buffer: Arc<StreamBuffer>,
    grace: std::time::Duration,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.grace.is_zero() || self.buffer.is_finished() {
            return;
        }
        let (chat, user, buffer, grace) = (self.chat.clone(), self.user, Arc::clone(&self.buffer), self.grace);
        actix_web::rt::spawn(async move {
            tokio::time::sleep(grace).await;
            // The guard's own subscription is gone by now: zero readers means nobody came back.
            if buffer.readers() == 0 && !buffer.is_finished() {
                tracing::info!(stream_id = %buffer.id(), "no reader came back: cancelling the turn");
                let _ = chat.cancel(user, buffer.id()).await;
            }
        });
    }
}

/// Counts an open SSE response in `aichat_sse_streams_open` while it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!("aichat_sse_streams_open").increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("aichat_sse_streams_open").decrement(1.0);
    }
}

/// The SSE frames of a stream after `after_seq`, ending after the terminal event; `guard` lives as
/// long as the response does.
pub fn sse_events(
    buffer: &Arc<StreamBuffer>,
    after_seq: u64,
    guard: Option<DisconnectGuard>,
) -> impl Stream<Item = sse::Event> + use<> {
    let open = OpenStream::new();
    stream::unfold((buffer.subscribe(after_seq), guard, open), |(mut reader, guard, open)| async move {
        reader.next_batch().await.map(|batch| (batch, (reader, guard, open)))
    })
    .flat_map(|batch| {
        stream::iter(batch.into_iter().map(|event| {
            sse::Event::Data(
                sse::Data::new(event.data.to_string())
                    .event("message")
                    .id(event.seq.to_string()),
            )
        }))
    })
}

/// Reads a turn's stream as `text/event-stream`: each event is `id: <seq>`, `event: message`,
/// `data: <StreamMessage JSON>`; the stream ends after a `done` or `error` event. Resumes after
/// `Last-Event-ID` (header or query) from memory or storage.
#[utoipa::path(
    tag = "chat",
    params(
        ("stream_id" = String, Path, description = "The stream, from `/send?streaming=true`"),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this event"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "Server-Sent Events whose `data` is a `StreamMessage`",
            content_type = "text/event-stream", body = actors::model::StreamMessage),
        (status = 404, description = "`stream_not_found`: no such stream for this user", body = ErrorBody),
    )
)]
#[get("/stream/{stream_id}")]
pub async fn read_stream(
    user: AuthUser,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let after = last_event_id(&req, &query)?;
    let buffer = state
        .chat
        .open_stream(user.0, &StreamId::from_raw(path.into_inner()))
        .await?;
    let guard = DisconnectGuard {
        chat: state.chat.clone(),
        user: user.0,
        buffer: Arc::clone(&buffer),
        grace: state.limits.cancel_on_disconnect,
    };
    Ok(Sse::from_infallible_stream(sse_events(&buffer, after, Some(guard)))
        .with_keep_alive(state.limits.sse_keepalive)
        .with_retry_duration(std::time::Duration::from_secs(3)))
}

/// The original's single-request stream (legacy; the PMM UI uses `/send?streaming=true` and
/// `/stream/{id}`): starts a turn with `message` and streams it on this response, as
/// `/stream/{id}` would. `X-Stream-ID` and `X-Session-ID` name the stream and session, so a client
/// that loses the connection can resume with `/stream/{id}` and `Last-Event-ID`.
#[utoipa::path(
    tag = "chat",
    params(LegacyStreamQuery),
    responses(
        (status = 200, description = "Server-Sent Events whose `data` is a `StreamMessage`",
            content_type = "text/event-stream", body = actors::model::StreamMessage,
            headers(("X-Stream-ID" = String, description = "The stream, for `/stream/{id}`"),
                    ("X-Session-ID" = String, description = "The session"))),
        (status = 400, description = "`missing_field`: no `message`", body = ErrorBody),
        (status = 404, description = "`approval_not_found` (an in-band decision)", body = ErrorBody),
        (status = 409, description = "`turn_in_progress`", body = ErrorBody),
        (status = 429, description = "`too_many_turns`", body = ErrorBody),
    )
)]
#[get("/stream")]
pub async fn legacy_stream(
    user: AuthUser,
    query: web::Query<LegacyStreamQuery>,
    state: web::Data<AppState>,
) -> Result<impl actix_web::Responder, ApiError> {
    let query = query.into_inner();
    let submission = Submission {
        text: message_text(query.message.as_deref(), state.limits.max_message_chars)?,
        session_id: query.session_id,
        provider: None,
        attachments: Vec::new(),
    };
    let started = start(user, submission, &state).await?;
    let guard = DisconnectGuard {
        chat: state.chat.clone(),
        user: user.0,
        buffer: Arc::clone(&started.stream),
        grace: state.limits.cancel_on_disconnect,
    };
    let events = sse_events(&started.stream, 0, Some(guard));
    Ok(
        actix_web::Responder::customize(
            Sse::from_infallible_stream(events).with_keep_alive(state.limits.sse_keepalive),
        )
        .insert_header(("X-Stream-ID", started.stream_id.to_string()))
        .insert_header(("X-Session-ID", started.session_id.to_string())),
    )
}

/// Stops the stream's turn (owner only): the provider request is aborted, tool calls in flight
/// are cancelled, the partial answer is stored as `cancelled`, and the stream ends with an
/// `error` event whose code is `cancelled`.
#[utoipa::path(
    tag = "chat",
    params(("stream_id" = String, Path, description = "The stream")),
    responses(
        (status = 200, description = "Cancelled", body = Cancelled),
        (status = 404, description = "`stream_not_found`", body = ErrorBody),
        (status = 409, description = "`turn_finished`: the turn already ended", body = ErrorBody),
    )
)]
#[post("/stream/{stream_id}/cancel")]
pub async fn cancel(
    user: AuthUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = StreamId::from_raw(path.into_inner());
    state.chat.cancel(user.0, &id).await?;
    Ok(HttpResponse::Ok().json(Cancelled {
        message: "Turn cancelled",
        stream_id: id.to_string(),
    }))
}

/// Clears a session's stored history and the model's context (the original's route).
#[utoipa::path(
    tag = "sessions",
    params(ClearQuery),
    responses(
        (status = 200, description = "Cleared", body = Confirmation),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`turn_in_progress`", body = ErrorBody),
    )
)]
#[delete("/clear")]
pub async fn clear(
    user: AuthUser,
    query: web::Query<ClearQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = query
        .session_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::MissingField("session_id parameter"))?;
    if !state.chat.clear(user.0, &SessionId::from_raw(id)).await? {
        return Err(ApiError::SessionNotFound);
    }
    Ok(HttpResponse::Ok().json(Confirmation {
        message: "Chat history cleared successfully",
    }))
}

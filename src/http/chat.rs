//! Chat routes: `POST /send` (streaming and not), `GET /stream/{stream_id}` (SSE) and
//! `DELETE /clear`.

use std::convert::Infallible;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use actix_web_lab::sse::{self, Sse};
use actors::Submission;
use actors::chat::DisconnectGuard;
use actors::ids::{SessionId, StreamId};
use actors::limits::ReaderPermit;
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
use super::error::ApiError;

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
    let submission = Submission {
        text: message_text(body.message.as_deref(), state.limits.max_message_chars)?,
        session_id: named_session(body.session_id.as_deref()),
        provider: body.provider.clone().filter(|p| !p.is_empty()),
        attachments: Vec::new(),
    };
    let started = state.chat.send(user.0, submission).await?;
    answer(started, streaming, &state).await
}

/// The session a request names (an empty id names none: a new session).
pub fn named_session(id: Option<&str>) -> Option<SessionId> {
    id.filter(|s| !s.is_empty()).map(SessionId::from_raw)
}

/// Answers a send: with `streaming` at once with the stream to read, otherwise with the whole
/// answer once the turn ends.
pub async fn answer(started: TurnStarted, streaming: bool, state: &AppState) -> Result<HttpResponse, ApiError> {
    if streaming {
        return Ok(HttpResponse::Ok().json(StreamStarted::from(&started)));
    }
    let answer = state.chat.answer(&started, state.limits.send_timeout).await?;
    Ok(HttpResponse::Ok().json(ChatResponse {
        message: CollectedMessage::from(answer),
        session_id: started.session_id.to_string(),
    }))
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
    permit: ReaderPermit,
) -> impl Stream<Item = sse::Event> + use<> {
    let open = (OpenStream::new(), permit);
    stream::unfold((buffer.subscribe(after_seq), guard, open), |(mut reader, guard, open)| async move {
        reader.next_batch().await.map(|batch| (batch, (reader, guard, open)))
    })
    .flat_map(|batch| {
        stream::iter(batch.into_iter().map(|event| {
            // Progress travels under its own event name; everything else as the original did.
            let name = actors::model::StreamMessage::sse_event_name(&event.data);
            sse::Event::Data(sse::Data::new(event.data.to_string()).event(name).id(event.seq.to_string()))
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
        (status = 429, description = "`too_many_streams`: this user reads `server.max_streams_per_user` streams already", body = ErrorBody),
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
    let permit = state.chat.admit_reader(user.0)?;
    let buffer = state
        .chat
        .open_stream(user.0, &StreamId::from_raw(path.into_inner()))
        .await?;
    let guard = state
        .chat
        .watch_disconnect(user.0, &buffer, state.limits.cancel_on_disconnect);
    Ok(
        Sse::from_infallible_stream(sse_events(&buffer, after, Some(guard), permit))
            .with_keep_alive(state.limits.sse_keepalive)
            .with_retry_duration(std::time::Duration::from_secs(3)),
    )
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
        (status = 429, description = "`too_many_turns` or `too_many_streams`", body = ErrorBody),
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
        session_id: named_session(query.session_id.as_deref()),
        provider: None,
        attachments: Vec::new(),
    };
    let permit = state.chat.admit_reader(user.0)?;
    let started = state.chat.send(user.0, submission).await?;
    let guard = state
        .chat
        .watch_disconnect(user.0, &started.stream, state.limits.cancel_on_disconnect);
    let events = sse_events(&started.stream, 0, Some(guard), permit);
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

/// Clears a session's stored history and the model's context (the original's route). A turn
/// running in the session is cancelled first (its stream ends with `error`, code `cancelled`).
#[utoipa::path(
    tag = "sessions",
    params(ClearQuery),
    responses(
        (status = 200, description = "Cleared (a running turn was cancelled)", body = Confirmation),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
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

//! Elicitation routes: the person answers a tool's question (`accept` with the form's content,
//! `decline` or `cancel`); the tool is sent again with the answer, and the turn continues on a
//! new stream, as after an approval decision. The questions that wait are listed (a page opened
//! again shows them).

use actix_web::{HttpResponse, get, post, web};
use actors::elicitation::{ElicitAction, ElicitAnswer};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::AuthUser;
use super::body::JsonObject;
use super::dto::{ErrorBody, PendingElicitation, PendingElicitations, StreamStarted};
use super::error::ApiError;

/// `POST /elicitations/{request_id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// `accept`, `decline` or `cancel`.
    #[schema(value_type = ElicitAction, required = true)]
    pub action: Option<ElicitAction>,
    /// The form's values (`accept` of a form only), checked against the question's schema; the
    /// schema's defaults fill what is left out.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub content: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Answers a tool's question; the turn continues on a new stream, as `/send?streaming=true`
/// answers.
#[utoipa::path(
    tag = "approvals",
    params(("request_id" = String, Path, description = "The question, `elicitation_<uuid>`")),
    request_body = AnswerRequest,
    responses(
        (status = 200, description = "Answered: the continuation's stream", body = StreamStarted),
        (status = 400, description = "`elicitation_answer_invalid` (with the failing `path`), `missing_field` or `invalid_json`", body = ErrorBody),
        (status = 404, description = "`elicitation_not_found`: no such question for this user", body = ErrorBody),
        (status = 409, description = "`elicitation_answered`, `elicitation_expired` or `turn_in_progress`", body = ErrorBody),
    )
)]
#[post("/elicitations/{request_id}")]
pub async fn answer(
    user: AuthUser,
    path: web::Path<String>,
    body: JsonObject<AnswerRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let action = body.action.ok_or(ApiError::MissingField("action"))?;
    let answer = ElicitAnswer {
        action,
        content: body.content.clone(),
    };
    let answered = state
        .chat
        .answer_elicitation(user.0, &path.into_inner(), answer)
        .await?;
    Ok(HttpResponse::Ok().json(StreamStarted {
        stream_url: format!("/v1/chat/stream/{}", answered.stream_id),
        stream_id: answered.stream_id.to_string(),
        session_id: answered.session_id.to_string(),
    }))
}

/// The user's tool questions that wait for an answer (paused turns), newest first. A question
/// asked during a running call is on its turn's stream.
#[utoipa::path(
    tag = "approvals",
    responses((status = 200, description = "The questions", body = PendingElicitations))
)]
#[get("/elicitations")]
pub async fn list_pending(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let records = state.chat.pending_elicitations(user.0).await?;
    let elicitations = records.iter().filter_map(PendingElicitation::of).collect();
    Ok(HttpResponse::Ok().json(PendingElicitations { elicitations }))
}

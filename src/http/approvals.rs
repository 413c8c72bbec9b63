//! Approval routes: decide a request (its continuation streams like a send), list requests, and
//! list or revoke "always allow" grants. The original's in-band `[APPROVE_TOOLS:<id>]` and
//! `[DENY_TOOLS:<id>]` messages are handled in `chat::send` through the same `Chat::decide`.

use actix_web::{HttpResponse, web};
use actors::approval::{ApprovalRecord, Decision, Remember};
use actors::storage::{DeleteGrant, ListApprovals, ListGrants};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::AuthUser;
use super::dto::StreamStarted;
use super::error::ApiError;

/// `POST /approvals/{request_id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Approve (all pending calls, or `approved_ids`) or deny all.
    pub approved: Option<bool>,
    /// The calls to approve; the other pending ones are denied.
    #[serde(default)]
    pub approved_ids: Option<Vec<String>>,
    /// `none` (default), `session` or `user`: "always allow" the approved tools.
    #[serde(default)]
    pub remember: Option<Remember>,
}

/// `GET /approvals` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// `pending`, `approved`, `denied`, `partially_approved`, `expired`, `superseded`.
    pub status: Option<String>,
}

/// The continuation's stream, as `/send?streaming=true` answers.
pub fn started(started: &actors::session::TurnStarted) -> HttpResponse {
    HttpResponse::Ok().json(StreamStarted {
        stream_url: format!("/v1/chat/stream/{}", started.stream_id),
        stream_id: started.stream_id.to_string(),
        session_id: started.session_id.to_string(),
    })
}

/// `POST /v1/chat/approvals/{request_id}`.
pub async fn decide(
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<DecisionRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let approved = body.approved.ok_or(ApiError::MissingField("approved"))?;
    let decision = Decision {
        approved,
        approved_ids: body.approved_ids.clone(),
        remember: body.remember.unwrap_or(Remember::None),
    };
    let turn = state.chat.decide(user.0, &path.into_inner(), None, decision).await?;
    Ok(started(&turn))
}

fn view(record: &ApprovalRecord, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    json!({
        "request_id": record.request_id,
        "session_id": record.session_id,
        "stream_id": record.stream_id,
        "status": record.effective_status(now),
        "tool_calls": record.calls,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "decided_by": record.decided_by,
        "decided_at": record.decided_at,
    })
}

/// `GET /v1/chat/approvals?status=pending`: the user's requests, newest first.
pub async fn list(
    user: AuthUser,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let now = actors::model::now();
    let all = state
        .chat
        .storage()
        .ask(ListApprovals {
            user: user.0,
            status: None,
        })
        .await?;
    let approvals: Vec<_> = all
        .iter()
        .filter(|r| query.status.as_deref().is_none_or(|s| r.effective_status(now) == s))
        .map(|r| view(r, now))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "approvals": approvals })))
}

/// `GET /v1/chat/approvals/grants`.
pub async fn grants(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let grants = state.chat.storage().ask(ListGrants { user: user.0 }).await?;
    Ok(HttpResponse::Ok().json(json!({ "grants": grants })))
}

/// `DELETE /v1/chat/approvals/grants/{id}`.
pub async fn revoke(
    user: AuthUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state
        .chat
        .storage()
        .ask(DeleteGrant {
            user: user.0,
            id: path.into_inner(),
        })
        .await?
    {
        return Err(ApiError::GrantNotFound);
    }
    Ok(HttpResponse::Ok().json(json!({ "message": "Grant revoked" })))
}

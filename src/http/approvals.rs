//! Approval routes: decide a request (its continuation streams like a send), list requests, and
//! list or revoke "always allow" grants. The original's in-band `[APPROVE_TOOLS:<id>]` and
//! `[DENY_TOOLS:<id>]` messages are handled in `chat::send` through the same `Chat::decide`.

use actix_web::{HttpResponse, delete, get, post, web};
use actors::approval::{ApprovalRecord, ApprovalStatus, Decision, Remember};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::AuthUser;
use super::body::JsonObject;
use super::dto::{ApprovalDto, ApprovalsList, Confirmation, ErrorBody, GrantsList, StreamStarted};
use super::error::ApiError;

/// `POST /approvals/{request_id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Approve (all pending calls, or `approved_ids`) or deny all.
    #[schema(value_type = bool, required = true)]
    pub approved: Option<bool>,
    /// The calls to approve; the other pending ones are denied.
    #[serde(default)]
    pub approved_ids: Option<Vec<String>>,
    /// `none` (default), `session` or `user`: "always allow" the approved tools.
    #[serde(default)]
    pub remember: Option<Remember>,
}

/// `GET /approvals` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only requests in this state.
    #[param(value_type = Option<ApprovalStatus>)]
    pub status: Option<String>,
}

impl ListQuery {
    /// The state asked for; a name that is none is refused, naming the parameter.
    fn status(&self) -> Result<Option<ApprovalStatus>, ApiError> {
        self.status
            .as_deref()
            .map(|s| {
                ApprovalStatus::from_name(s).map_err(|err| ApiError::InvalidParameter {
                    name: "status",
                    reason: err.to_string(),
                })
            })
            .transpose()
    }
}

/// Decides an approval request; the turn continues on a new stream, as `/send?streaming=true`
/// answers.
#[utoipa::path(
    tag = "approvals",
    params(("request_id" = String, Path, description = "The request, `approval_<uuid>`")),
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "Decided: the continuation's stream", body = StreamStarted),
        (status = 404, description = "`approval_not_found`: no such request for this user", body = ErrorBody),
        (status = 409, description = "`approval_decided`, `approval_expired` or `turn_in_progress`", body = ErrorBody),
    )
)]
#[post("/approvals/{request_id}")]
pub async fn decide(
    user: AuthUser,
    path: web::Path<String>,
    body: JsonObject<DecisionRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let approved = body.approved.ok_or(ApiError::MissingField("approved"))?;
    let decision = Decision {
        approved,
        approved_ids: body.approved_ids.clone(),
        remember: body.remember.unwrap_or(Remember::None),
    };
    let turn = state.chat.decide(user.0, &path.into_inner(), None, decision).await?;
    Ok(HttpResponse::Ok().json(StreamStarted::from(&turn)))
}

fn view(record: &ApprovalRecord, now: chrono::DateTime<chrono::Utc>) -> ApprovalDto {
    // A request that expired without a decision is shown as expiry decided it, when it expired.
    let expired = record.status == ApprovalStatus::Pending && record.effective_status(now) == ApprovalStatus::Expired;
    ApprovalDto {
        request_id: record.request_id.clone(),
        session_id: record.session_id.to_string(),
        stream_id: record.stream_id.to_string(),
        status: record.effective_status(now),
        tool_calls: record.calls.clone(),
        created_at: record.created_at,
        expires_at: record.expires_at,
        decided_by: if expired {
            Some("expiry".into())
        } else {
            record.decided_by.clone()
        },
        decided_at: if expired {
            Some(record.expires_at)
        } else {
            record.decided_at
        },
    }
}

/// The user's approval requests, newest first.
#[utoipa::path(
    tag = "approvals",
    params(ListQuery),
    responses((status = 200, description = "The requests", body = ApprovalsList))
)]
#[get("/approvals")]
pub async fn list_approvals(
    user: AuthUser,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let now = actors::model::now();
    let records = state.chat.approvals(user.0, query.status()?).await?;
    let approvals = records.iter().map(|r| view(r, now)).collect();
    Ok(HttpResponse::Ok().json(ApprovalsList { approvals }))
}

/// The user's "always allow" grants.
#[utoipa::path(
    tag = "approvals",
    responses((status = 200, description = "The grants", body = GrantsList))
)]
#[get("/grants")]
pub async fn list_grants(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let grants = state.chat.grants(user.0).await?;
    Ok(HttpResponse::Ok().json(GrantsList { grants }))
}

/// Revokes a grant.
#[utoipa::path(
    tag = "approvals",
    params(("id" = String, Path, description = "The grant")),
    responses(
        (status = 200, description = "Revoked", body = Confirmation),
        (status = 404, description = "`grant_not_found`", body = ErrorBody),
    )
)]
#[delete("/grants/{id}")]
pub async fn revoke_grant(
    user: AuthUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.chat.revoke_grant(user.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(Confirmation {
        message: "Grant revoked",
    }))
}

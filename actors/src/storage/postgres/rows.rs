//! PostgreSQL rows to domain types: user ids, JSONB columns, the column lists the queries share.

use postgres::Row;
use postgres::types::Json;

use crate::approval::{ApprovalRecord, ApprovalStatus};
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{ApprovalRequestView, ChatMessage, Role, Session, TitleSource};
use crate::storage::{StorageError, StreamRecord, StreamStatus};

pub(super) fn parse_user(raw: &str) -> Result<UserId, StorageError> {
    raw.parse::<i64>()
        .ok()
        .and_then(UserId::new)
        .ok_or_else(|| StorageError::Corrupt(format!("bad user id {raw:?}")))
}

/// A JSONB column that is `NULL` when its value is empty (the original's encoding).
pub(super) fn jsonb_or_null<T: serde::Serialize>(value: &[T]) -> Option<Json<&[T]>> {
    (!value.is_empty()).then_some(Json(value))
}

fn json_or_default<T: Default>(value: Option<Json<T>>) -> T {
    value.map(|Json(v)| v).unwrap_or_default()
}

pub(super) const SESSION_COLUMNS: &str = "id, user_id, title, title_source, created_at, updated_at";

pub(super) fn session_from_row(row: &Row) -> Result<Session, StorageError> {
    Ok(Session {
        id: SessionId::from_raw(row.try_get::<_, String>(0)?),
        user_id: parse_user(row.try_get(1)?)?,
        title: row.try_get(2)?,
        title_source: TitleSource::parse(row.try_get(3)?),
        created_at: row.try_get(4)?,
        updated_at: row.try_get(5)?,
    })
}

/// A message's columns, and its approval request's status as of now (a pending request past its
/// expiry reads `expired`).
pub(super) const MESSAGE_COLUMNS: &str = "id, role, content, tool_calls, tool_executions, tool_call_id, usage, \
     created_at, status, approval_request, (SELECT CASE WHEN a.status = 'pending' AND a.expires_at <= NOW() \
     THEN 'expired' ELSE a.status END FROM tool_approvals a \
     WHERE a.request_id = chat_messages.approval_request->>'request_id')";

pub(super) fn message_from_row(row: &Row) -> Result<ChatMessage, StorageError> {
    let role: &str = row.try_get(1)?;
    let approval: Option<Json<ApprovalRequestView>> = row.try_get(9)?;
    let approval_status: Option<String> = row.try_get(10)?;
    Ok(ChatMessage {
        id: row.try_get(0)?,
        role: Role::parse(role).ok_or_else(|| StorageError::Corrupt(format!("bad role {role:?}")))?,
        content: row.try_get(2)?,
        tool_calls: json_or_default(row.try_get(3)?),
        tool_executions: json_or_default(row.try_get(4)?),
        tool_call_id: row.try_get(5)?,
        usage: row.try_get::<_, Option<Json<_>>>(6)?.map(|Json(u)| u),
        timestamp: row.try_get(7)?,
        status: row.try_get(8)?,
        approval_request: approval.map(|Json(mut view)| {
            view.processed = approval_status.as_deref().map(|s| s != "pending");
            view.status = approval_status;
            view
        }),
        attachments: Vec::new(),
    })
}

pub(super) const STREAM_COLUMNS: &str = "id, user_id, session_id, status, created_at";

pub(super) fn stream_from_row(row: &Row) -> Result<StreamRecord, StorageError> {
    Ok(StreamRecord {
        id: StreamId::from_raw(row.try_get::<_, String>(0)?),
        user_id: parse_user(row.try_get(1)?)?,
        session_id: SessionId::from_raw(row.try_get::<_, String>(2)?),
        status: StreamStatus::parse(row.try_get(3)?),
        created_at: row.try_get(4)?,
    })
}

pub(super) const APPROVAL_COLUMNS: &str =
    "request_id, user_id, session_id, stream_id, calls, status, created_at, expires_at, decided_by, decided_at";

pub(super) fn approval_from_row(row: &Row) -> Result<ApprovalRecord, StorageError> {
    let status: &str = row.try_get(5)?;
    Ok(ApprovalRecord {
        request_id: row.try_get(0)?,
        user_id: parse_user(row.try_get(1)?)?,
        session_id: SessionId::from_raw(row.try_get::<_, String>(2)?),
        stream_id: StreamId::from_raw(row.try_get::<_, String>(3)?),
        calls: row.try_get::<_, Json<_>>(4)?.0,
        status: ApprovalStatus::parse(status)
            .ok_or_else(|| StorageError::Corrupt(format!("unknown approval status {status:?}")))?,
        created_at: row.try_get(6)?,
        expires_at: row.try_get(7)?,
        decided_by: row.try_get(8)?,
        decided_at: row.try_get(9)?,
    })
}

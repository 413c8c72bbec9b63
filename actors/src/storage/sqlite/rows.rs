//! Rows to domain types and back: timestamps, user ids, JSON columns, the column lists, and the
//! attachment and approval helpers the table code shares.

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};

use crate::approval::{ApprovalRecord, ApprovalStatus};
use crate::attachment::Attachment;
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{ApprovalRequestView, ChatMessage, Role, Session, TitleSource};
use crate::storage::StorageError;

pub(super) fn parse_time(raw: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn parse_status(raw: &str) -> rusqlite::Result<ApprovalStatus> {
    ApprovalStatus::parse(raw).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            format!("unknown status {raw:?}").into(),
        )
    })
}

pub(super) fn parse_user(raw: &str) -> rusqlite::Result<UserId> {
    raw.parse::<i64>().ok().and_then(UserId::new).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("bad user id {raw:?}").into())
    })
}

fn json_column<T: serde::de::DeserializeOwned + Default>(raw: Option<String>) -> rusqlite::Result<T> {
    match raw {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))),
    }
}

pub(super) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: SessionId::from_raw(row.get::<_, String>(0)?),
        user_id: parse_user(&row.get::<_, String>(1)?)?,
        title: row.get(2)?,
        title_source: TitleSource::parse(&row.get::<_, String>(3)?),
        created_at: parse_time(&row.get::<_, String>(4)?)?,
        updated_at: parse_time(&row.get::<_, String>(5)?)?,
    })
}

pub(super) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<ChatMessage> {
    let role: String = row.get(1)?;
    Ok(ChatMessage {
        id: row.get(0)?,
        role: Role::parse(&role).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("bad role {role:?}").into(),
            )
        })?,
        content: row.get(2)?,
        tool_calls: json_column(row.get(3)?)?,
        tool_executions: json_column(row.get(4)?)?,
        tool_call_id: row.get(5)?,
        usage: json_column(row.get(6)?)?,
        status: row.get(8)?,
        approval_request: approval_view(row.get(9)?, row.get(10)?)?,
        timestamp: parse_time(&row.get::<_, String>(7)?)?,
        attachments: Vec::new(),
    })
}

/// Fills in the attachments of `messages` (one page of a session: `limit`/`offset` as its query)
/// with one query for the page.
pub(super) fn load_attachments(
    tx: &rusqlite::Transaction<'_>,
    session: &SessionId,
    (limit, offset): (i64, i64),
    messages: &mut [ChatMessage],
) -> Result<(), StorageError> {
    let mut stmt = tx.prepare_cached(
        "SELECT a.message_id, a.id, a.filename, a.mime_type, a.size, b.content FROM chat_attachments a
         JOIN attachment_blobs b ON b.hash = a.content_hash
         WHERE a.message_id IN (SELECT id FROM chat_messages WHERE session_id = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3)
         ORDER BY a.rowid",
    )?;
    let mut rows = stmt.query(params![session.as_str(), limit, offset])?;
    let mut index: Option<std::collections::HashMap<String, usize>> = None;
    while let Some(row) = rows.next()? {
        let message_id: String = row.get(0)?;
        let attachment = Attachment {
            id: row.get(1)?,
            filename: row.get(2)?,
            mime_type: row.get(3)?,
            size: row.get(4)?,
            content: row.get(5)?,
        };
        let index = index.get_or_insert_with(|| messages.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect());
        if let Some(&i) = index.get(&message_id) {
            messages[i].attachments.push(attachment);
        }
    }
    Ok(())
}

/// Drops the stored file contents among `hashes` that no attachment refers to any more.
pub(super) fn drop_orphan_blobs(tx: &rusqlite::Transaction<'_>, hashes: &[String]) -> Result<(), StorageError> {
    let mut drop = tx.prepare_cached(
        "DELETE FROM attachment_blobs WHERE hash = ?1
         AND NOT EXISTS (SELECT 1 FROM chat_attachments a WHERE a.content_hash = ?1)",
    )?;
    for hash in hashes {
        drop.execute(params![hash])?;
    }
    Ok(())
}

/// The content hashes of a session's attachments (read before its messages go).
pub(super) fn session_blob_hashes(
    tx: &rusqlite::Transaction<'_>,
    session: &SessionId,
) -> Result<Vec<String>, StorageError> {
    let mut stmt = tx.prepare_cached(
        "SELECT DISTINCT a.content_hash FROM chat_attachments a
         JOIN chat_messages m ON m.id = a.message_id WHERE m.session_id = ?1",
    )?;
    Ok(stmt
        .query_map(params![session.as_str()], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

fn approval_view(raw: Option<String>, status: Option<String>) -> rusqlite::Result<Option<ApprovalRequestView>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut view: ApprovalRequestView = serde_json::from_str(&raw)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e)))?;
    view.processed = status.as_deref().map(|s| s != "pending");
    view.status = status;
    Ok(Some(view))
}

pub(super) fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    let calls: String = row.get(4)?;
    Ok(ApprovalRecord {
        request_id: row.get(0)?,
        user_id: parse_user(&row.get::<_, String>(1)?)?,
        session_id: SessionId::from_raw(row.get::<_, String>(2)?),
        stream_id: StreamId::from_raw(row.get::<_, String>(3)?),
        calls: serde_json::from_str(&calls)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?,
        status: parse_status(&row.get::<_, String>(5)?)?,
        created_at: parse_time(&row.get::<_, String>(6)?)?,
        expires_at: parse_time(&row.get::<_, String>(7)?)?,
        decided_by: row.get(8)?,
        decided_at: row.get::<_, Option<String>>(9)?.map(|t| parse_time(&t)).transpose()?,
    })
}

pub(super) const APPROVAL_COLUMNS: &str =
    "request_id, user_id, session_id, stream_id, calls, status, created_at, expires_at, decided_by, decided_at";

pub(super) const SESSION_COLUMNS: &str = "id, user_id, title, title_source, created_at, updated_at";
pub(super) const MESSAGE_COLUMNS: &str = "id, role, content, tool_calls, tool_executions, tool_call_id, usage, created_at, status, \
     approval_request, (SELECT CASE WHEN a.status = 'pending' \
     AND a.expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN 'expired' ELSE a.status END \
     FROM tool_approvals a WHERE a.request_id = json_extract(chat_messages.approval_request, '$.request_id'))";

pub(super) fn optional_json<T: serde::Serialize>(value: &[T]) -> Result<Option<String>, StorageError> {
    if value.is_empty() {
        Ok(None)
    } else {
        Ok(Some(serde_json::to_string(value)?))
    }
}

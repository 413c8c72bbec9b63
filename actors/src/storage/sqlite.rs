//! `SqliteStore`: the embedded [`ChatStore`] on SQLite through an r2d2 pool. WAL mode, a busy
//! timeout and `BEGIN IMMEDIATE` for every write keep concurrent chats from seeing
//! "database is locked"; WAL checkpoints (the only fsyncs under `synchronous = NORMAL`) run on a
//! background thread, so no turn waits for the disk.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::{ChatStore, Page, StorageError, StoredEvent, StreamRecord, StreamStatus, TurnWrite};
use crate::approval::{ApprovalRecord, Grant, Remember};
use crate::attachment::Attachment;
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{
    ApprovalRequestView, ChatMessage, Role, Session, StreamMessage, StreamMessageType, TitleSource, format_time,
};

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the background thread checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// SQLite behind an r2d2 pool.
pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    /// An exclusive lock on `<database>.lock` for the life of the store.
    _lock: std::fs::File,
}

/// Takes `<database>.lock` exclusively: a second server on the same file would mark the first
/// one's running turns as interrupted at start-up (and both would sweep and checkpoint).
fn lock_database(path: &Path) -> Result<std::fs::File, StorageError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|err| StorageError::Unavailable(format!("cannot open {}: {err}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::InUse(path.display().to_string())),
        Err(std::fs::TryLockError::Error(err)) => Err(StorageError::Unavailable(format!(
            "cannot lock {}: {err}",
            lock_path.display()
        ))),
    }
}

/// Checkpoints the WAL every `CHECKPOINT_EVERY` on its own connection until `stop` disconnects.
/// Writers never checkpoint (`wal_autocheckpoint = 0` on the pool): a checkpoint fsyncs, and
/// done inside a commit it held that turn for 10–20 ms.
fn spawn_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StorageError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                // PASSIVE: copies what no reader still needs, never blocks readers or writers.
                let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(err) = result {
                    tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
                }
            }
        })
        .map_err(|err| StorageError::Unavailable(format!("cannot start the checkpoint thread: {err}")))?;
    Ok(stop)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it to the current schema.
    pub fn open(path: &Path, pool_size: u32) -> Result<Self, StorageError> {
        let lock = lock_database(path)?;
        // WAL mode is a property of the file: switch it and migrate on one connection first. Done
        // by every pooled connection at once, the switch races for the lock ("database is locked").
        {
            let mut conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")?;
            super::schema::migrate(&mut conn)?;
        }
        let manager = SqliteConnectionManager::file(path).with_init(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;")
        });
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(BUSY_TIMEOUT)
            .build(manager)?;
        Ok(Self {
            pool,
            _checkpointer: spawn_checkpointer(path)?,
            _lock: lock,
        })
    }

    fn conn(&self) -> Result<PooledConnection<SqliteConnectionManager>, StorageError> {
        Ok(self.pool.get()?)
    }
}

fn parse_time(raw: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn parse_user(raw: &str) -> rusqlite::Result<UserId> {
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

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: SessionId::from_raw(row.get::<_, String>(0)?),
        user_id: parse_user(&row.get::<_, String>(1)?)?,
        title: row.get(2)?,
        title_source: TitleSource::parse(&row.get::<_, String>(3)?),
        created_at: parse_time(&row.get::<_, String>(4)?)?,
        updated_at: parse_time(&row.get::<_, String>(5)?)?,
    })
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<ChatMessage> {
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
fn load_attachments(
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
fn drop_orphan_blobs(tx: &rusqlite::Transaction<'_>, hashes: &[String]) -> Result<(), StorageError> {
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
fn session_blob_hashes(tx: &rusqlite::Transaction<'_>, session: &SessionId) -> Result<Vec<String>, StorageError> {
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

fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    let calls: String = row.get(4)?;
    Ok(ApprovalRecord {
        request_id: row.get(0)?,
        user_id: parse_user(&row.get::<_, String>(1)?)?,
        session_id: SessionId::from_raw(row.get::<_, String>(2)?),
        stream_id: StreamId::from_raw(row.get::<_, String>(3)?),
        calls: serde_json::from_str(&calls)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?,
        status: row.get(5)?,
        created_at: parse_time(&row.get::<_, String>(6)?)?,
        expires_at: parse_time(&row.get::<_, String>(7)?)?,
        decided_by: row.get(8)?,
        decided_at: row.get::<_, Option<String>>(9)?.map(|t| parse_time(&t)).transpose()?,
    })
}

const APPROVAL_COLUMNS: &str =
    "request_id, user_id, session_id, stream_id, calls, status, created_at, expires_at, decided_by, decided_at";

const SESSION_COLUMNS: &str = "id, user_id, title, title_source, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "id, role, content, tool_calls, tool_executions, tool_call_id, usage, created_at, status, \
     approval_request, (SELECT a.status FROM tool_approvals a \
     WHERE a.request_id = json_extract(chat_messages.approval_request, '$.request_id'))";

fn optional_json<T: serde::Serialize>(value: &[T]) -> Result<Option<String>, StorageError> {
    if value.is_empty() {
        Ok(None)
    } else {
        Ok(Some(serde_json::to_string(value)?))
    }
}

impl ChatStore for SqliteStore {
    fn create_session(&self, session: &Session) -> Result<(), StorageError> {
        self.conn()?.execute(
            "INSERT INTO chat_sessions (id, user_id, title, title_source, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                session.id.as_str(),
                session.user_id.to_string(),
                session.title,
                session.title_source.as_str(),
                format_time(session.created_at),
                format_time(session.updated_at),
            ],
        )?;
        Ok(())
    }

    fn get_session(&self, user: UserId, id: &SessionId) -> Result<Option<Session>, StorageError> {
        let conn = self.conn()?;
        let session = conn
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE id = ?1 AND user_id = ?2"),
                params![id.as_str(), user.to_string()],
                session_from_row,
            )
            .optional()?;
        Ok(session)
    }

    fn list_sessions(&self, user: UserId, page: Page) -> Result<(Vec<Session>, u64), StorageError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE user_id = ?1
             ORDER BY updated_at DESC, id DESC LIMIT ?2 OFFSET ?3"
        ))?;
        let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
        let sessions = stmt
            .query_map(params![user.to_string(), page.limit, offset], session_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let total: i64 = conn.query_row(
            "SELECT COUNT(*) FROM chat_sessions WHERE user_id = ?1",
            params![user.to_string()],
            |row| row.get(0),
        )?;
        Ok((sessions, u64::try_from(total).unwrap_or(0)))
    }

    fn set_title(&self, user: UserId, id: &SessionId, title: &str, source: TitleSource) -> Result<bool, StorageError> {
        let conn = self.conn()?;
        let now = format_time(Utc::now());
        let changed = match source {
            TitleSource::Generated => conn.execute(
                "UPDATE chat_sessions SET title = ?1, title_source = 'generated'
                 WHERE id = ?2 AND user_id = ?3 AND title_source = 'default'",
                params![title, id.as_str(), user.to_string()],
            )?,
            TitleSource::User | TitleSource::Default => conn.execute(
                "UPDATE chat_sessions SET title = ?1, title_source = ?2, updated_at = ?3
                 WHERE id = ?4 AND user_id = ?5",
                params![title, source.as_str(), now, id.as_str(), user.to_string()],
            )?,
        };
        Ok(changed > 0)
    }

    fn delete_session(&self, user: UserId, id: &SessionId) -> Result<bool, StorageError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let hashes = session_blob_hashes(&tx, id)?;
        let changed = tx.execute(
            "DELETE FROM chat_sessions WHERE id = ?1 AND user_id = ?2",
            params![id.as_str(), user.to_string()],
        )?;
        drop_orphan_blobs(&tx, &hashes)?;
        tx.commit()?;
        Ok(changed > 0)
    }

    fn list_messages(
        &self,
        user: UserId,
        id: &SessionId,
        page: Option<Page>,
    ) -> Result<Option<Vec<ChatMessage>>, StorageError> {
        let mut conn = self.conn()?;
        // One read transaction so the ownership check and the rows agree.
        let tx = conn.transaction()?;
        let owned: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM chat_sessions WHERE id = ?1 AND user_id = ?2",
                params![id.as_str(), user.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        if owned.is_none() {
            return Ok(None);
        }
        let (limit, offset) = match page {
            Some(p) => (i64::from(p.limit), i64::try_from(p.offset).unwrap_or(i64::MAX)),
            None => (-1, 0),
        };
        let mut messages = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = ?1
                 ORDER BY seq LIMIT ?2 OFFSET ?3"
            ))?;
            stmt.query_map(params![id.as_str(), limit, offset], message_from_row)?
                .collect::<Result<Vec<_>, _>>()?
        };
        load_attachments(&tx, id, (limit, offset), &mut messages)?;
        tx.commit()?;
        Ok(Some(messages))
    }

    fn clear_messages(&self, user: UserId, id: &SessionId) -> Result<bool, StorageError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let owned = tx.execute(
            "UPDATE chat_sessions SET updated_at = ?1 WHERE id = ?2 AND user_id = ?3",
            params![format_time(Utc::now()), id.as_str(), user.to_string()],
        )?;
        if owned == 0 {
            return Ok(false);
        }
        let hashes = session_blob_hashes(&tx, id)?;
        tx.execute("DELETE FROM chat_messages WHERE session_id = ?1", params![id.as_str()])?;
        drop_orphan_blobs(&tx, &hashes)?;
        tx.commit()?;
        Ok(true)
    }

    fn write_turn(&self, write: &TurnWrite) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(stream) = &write.new_stream {
            tx.execute(
                "INSERT INTO chat_streams (id, user_id, session_id, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    stream.id.as_str(),
                    stream.user_id.to_string(),
                    stream.session_id.as_str(),
                    stream.status.as_str(),
                    format_time(stream.created_at),
                ],
            )?;
        }
        if let Some(session_id) = &write.session_id
            && !write.messages.is_empty()
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO chat_messages
                 (id, session_id, role, content, tool_calls, tool_executions, tool_call_id, usage, created_at, status,
                  approval_request)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for message in &write.messages {
                let usage = message.usage.map(|u| serde_json::to_string(&u)).transpose()?;
                insert.execute(params![
                    message.id,
                    session_id.as_str(),
                    message.role.as_str(),
                    message.content,
                    optional_json(&message.tool_calls)?,
                    optional_json(&message.tool_executions)?,
                    message.tool_call_id,
                    usage,
                    format_time(message.timestamp),
                    message.status,
                    message
                        .approval_request
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()?,
                ])?;
            }
            for message in write.messages.iter().filter(|m| !m.attachments.is_empty()) {
                let mut blob =
                    tx.prepare_cached("INSERT OR IGNORE INTO attachment_blobs (hash, content) VALUES (?1, ?2)")?;
                let mut row = tx.prepare_cached(
                    "INSERT INTO chat_attachments (id, message_id, filename, mime_type, size, content_hash, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for attachment in &message.attachments {
                    let hash = attachment.content_hash();
                    blob.execute(params![hash, attachment.content])?;
                    row.execute(params![
                        attachment.id,
                        message.id,
                        attachment.filename,
                        attachment.mime_type,
                        attachment.size,
                        hash,
                        format_time(message.timestamp),
                    ])?;
                }
            }
            tx.execute(
                "UPDATE chat_sessions SET updated_at = ?1 WHERE id = ?2",
                params![format_time(Utc::now()), session_id.as_str()],
            )?;
        }
        if let Some(stream_id) = &write.stream_id {
            if !write.events.is_empty() {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO chat_stream_events (stream_id, seq, data) VALUES (?1, ?2, ?3)",
                )?;
                for event in &write.events {
                    let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
                    insert.execute(params![stream_id.as_str(), seq, event.data])?;
                }
            }
            if let Some(status) = write.finish {
                tx.execute(
                    "UPDATE chat_streams SET status = ?1, finished_at = ?2 WHERE id = ?3",
                    params![status.as_str(), format_time(Utc::now()), stream_id.as_str()],
                )?;
            }
        }
        if let Some(approval) = &write.new_approval {
            tx.execute(
                &format!(
                    "INSERT INTO tool_approvals ({APPROVAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    approval.request_id,
                    approval.user_id.to_string(),
                    approval.session_id.as_str(),
                    approval.stream_id.as_str(),
                    serde_json::to_string(&approval.calls)?,
                    approval.status,
                    format_time(approval.created_at),
                    format_time(approval.expires_at),
                    approval.decided_by,
                    approval.decided_at.map(format_time),
                ],
            )?;
        }
        if let Some(approval) = &write.settle_approval {
            let changed = tx.execute(
                "UPDATE tool_approvals SET calls = ?1, status = ?2, decided_by = ?3, decided_at = ?4
                 WHERE request_id = ?5 AND user_id = ?6 AND status = 'pending'",
                params![
                    serde_json::to_string(&approval.calls)?,
                    approval.status,
                    approval.decided_by,
                    approval.decided_at.map(format_time),
                    approval.request_id,
                    approval.user_id.to_string(),
                ],
            )?;
            if changed == 0 {
                return Err(StorageError::Conflict(format!(
                    "approval {} was already decided",
                    approval.request_id
                )));
            }
        }
        for (user, session, tool) in &write.new_grants {
            tx.execute(
                "INSERT INTO tool_grants (id, user_id, session_id, tool, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    crate::ids::prefixed_id("grant"),
                    user.to_string(),
                    session.as_ref().map(SessionId::as_str),
                    tool,
                    format_time(Utc::now()),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get_approval(&self, user: UserId, request_id: &str) -> Result<Option<ApprovalRecord>, StorageError> {
        // The original UI names a request by its history row too: the `tool_approval` message's
        // id, or `historical_<that id>`; both lead to the request the row records.
        let id = request_id.strip_prefix("historical_").unwrap_or(request_id);
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM tool_approvals
                     WHERE user_id = ?2 AND request_id = COALESCE(
                         (SELECT json_extract(m.approval_request, '$.request_id') FROM chat_messages m
                          WHERE m.id = ?1 AND m.role = 'tool_approval'),
                         ?1)"
                ),
                params![id, user.to_string()],
                approval_from_row,
            )
            .optional()?)
    }

    fn pending_approval(&self, user: UserId, session: &SessionId) -> Result<Option<ApprovalRecord>, StorageError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM tool_approvals
                     WHERE session_id = ?1 AND user_id = ?2 AND status = 'pending' ORDER BY created_at DESC LIMIT 1"
                ),
                params![session.as_str(), user.to_string()],
                approval_from_row,
            )
            .optional()?)
    }

    fn list_approvals(&self, user: UserId, status: Option<&str>) -> Result<Vec<ApprovalRecord>, StorageError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM tool_approvals
             WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2) ORDER BY created_at DESC LIMIT 500"
        ))?;
        Ok(stmt
            .query_map(params![user.to_string(), status], approval_from_row)?
            .collect::<Result<_, _>>()?)
    }

    fn list_grants(&self, user: UserId) -> Result<Vec<Grant>, StorageError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, tool, session_id, created_at FROM tool_grants WHERE user_id = ?1 ORDER BY created_at",
        )?;
        let grants = stmt
            .query_map(params![user.to_string()], |row| {
                let session: Option<String> = row.get(2)?;
                Ok(Grant {
                    id: row.get(0)?,
                    tool: row.get(1)?,
                    scope: if session.is_some() {
                        Remember::Session
                    } else {
                        Remember::User
                    },
                    session_id: session.map(SessionId::from_raw),
                    created_at: parse_time(&row.get::<_, String>(3)?)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(grants)
    }

    fn delete_grant(&self, user: UserId, id: &str) -> Result<bool, StorageError> {
        let changed = self.conn()?.execute(
            "DELETE FROM tool_grants WHERE id = ?1 AND user_id = ?2",
            params![id, user.to_string()],
        )?;
        Ok(changed > 0)
    }

    fn load_stream(
        &self,
        user: UserId,
        id: &StreamId,
        after_seq: u64,
    ) -> Result<Option<(StreamRecord, Vec<StoredEvent>)>, StorageError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let record = tx
            .query_row(
                "SELECT id, user_id, session_id, status, created_at FROM chat_streams
                 WHERE id = ?1 AND user_id = ?2",
                params![id.as_str(), user.to_string()],
                |row| {
                    Ok(StreamRecord {
                        id: StreamId::from_raw(row.get::<_, String>(0)?),
                        user_id: parse_user(&row.get::<_, String>(1)?)?,
                        session_id: SessionId::from_raw(row.get::<_, String>(2)?),
                        status: StreamStatus::parse(&row.get::<_, String>(3)?),
                        created_at: parse_time(&row.get::<_, String>(4)?)?,
                    })
                },
            )
            .optional()?;
        let Some(record) = record else {
            return Ok(None);
        };
        let events = {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, data FROM chat_stream_events WHERE stream_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
            stmt.query_map(params![id.as_str(), after], |row| {
                Ok(StoredEvent {
                    seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                    data: row.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(Some((record, events)))
    }

    fn interrupt_running_streams(&self) -> Result<u64, StorageError> {
        let mut conn = self.conn()?;
        let running: Vec<(String, String)> = {
            let mut stmt = conn.prepare("SELECT id, session_id FROM chat_streams WHERE status = 'running'")?;
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (stream_id, session_id) in &running {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let events: Vec<(i64, String)> = {
                let mut stmt =
                    tx.prepare("SELECT seq, data FROM chat_stream_events WHERE stream_id = ?1 ORDER BY seq")?;
                stmt.query_map(params![stream_id], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let session = SessionId::from_raw(session_id.as_str());
            // The text of the round that was not stored yet: what came after the last tool round.
            let messages: Vec<StreamMessage> = events
                .iter()
                .filter_map(|(_, data)| serde_json::from_str(data).ok())
                .collect();
            let start = messages
                .iter()
                .rposition(|m| m.kind == StreamMessageType::ToolExecution)
                .map_or(0, |i| i + 1);
            let partial: String = messages[start..]
                .iter()
                .filter(|m| m.kind == StreamMessageType::Message)
                .filter_map(|m| m.content.as_deref())
                .collect();
            let now = Utc::now();
            if !partial.is_empty() {
                let mut message = ChatMessage::new(Role::Assistant, partial);
                message.status = Some("interrupted".into());
                tx.execute(
                    "INSERT INTO chat_messages (id, session_id, role, content, created_at, status)
                     VALUES (?1, ?2, 'assistant', ?3, ?4, 'interrupted')",
                    params![message.id, session_id, message.content, format_time(message.timestamp)],
                )?;
            }
            let ended = messages.last().is_some_and(StreamMessage::is_terminal);
            if !ended {
                let note = StreamMessage::error(
                    &session,
                    "interrupted",
                    "The server stopped before this answer was complete.",
                );
                let seq = events.last().map_or(1, |(seq, _)| seq + 1);
                tx.execute(
                    "INSERT INTO chat_stream_events (stream_id, seq, data) VALUES (?1, ?2, ?3)",
                    params![stream_id, seq, serde_json::to_string(&note)?],
                )?;
            }
            tx.execute(
                "UPDATE chat_streams SET status = 'interrupted', finished_at = ?1 WHERE id = ?2",
                params![format_time(now), stream_id],
            )?;
            tx.commit()?;
        }
        Ok(u64::try_from(running.len()).unwrap_or(0))
    }

    fn ping(&self) -> Result<(), StorageError> {
        self.conn()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), 4).unwrap();
        (dir, store)
    }

    fn user(n: i64) -> UserId {
        UserId::new(n).unwrap()
    }

    #[test]
    fn migration_is_idempotent_and_sets_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(SqliteStore::open(&path, 1).unwrap());
        let store = SqliteStore::open(&path, 1).unwrap();
        let version: i64 = store
            .conn()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, super::super::SCHEMA_VERSION);
    }

    #[test]
    fn sessions_are_isolated_by_user() {
        let (_dir, store) = store();
        let session = Session::new(user(1), "mine".into(), TitleSource::User);
        store.create_session(&session).unwrap();
        assert!(store.get_session(user(1), &session.id).unwrap().is_some());
        assert!(store.get_session(user(2), &session.id).unwrap().is_none());
        assert!(store.list_messages(user(2), &session.id, None).unwrap().is_none());
        assert!(!store.delete_session(user(2), &session.id).unwrap());
        assert!(!store.clear_messages(user(2), &session.id).unwrap());
        assert!(store.get_session(user(1), &session.id).unwrap().is_some());
    }

    #[test]
    fn generated_titles_never_replace_user_titles() {
        let (_dir, store) = store();
        let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
        store.create_session(&session).unwrap();
        assert!(
            store
                .set_title(user(1), &session.id, "Mine", TitleSource::User)
                .unwrap()
        );
        assert!(
            !store
                .set_title(user(1), &session.id, "Auto", TitleSource::Generated)
                .unwrap()
        );
        let stored = store.get_session(user(1), &session.id).unwrap().unwrap();
        assert_eq!(stored.title, "Mine");
    }

    #[test]
    fn turn_writes_keep_message_order_and_stream_events() {
        let (_dir, store) = store();
        let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
        store.create_session(&session).unwrap();
        let stream = StreamRecord {
            id: StreamId::generate(),
            user_id: user(1),
            session_id: session.id.clone(),
            status: StreamStatus::Running,
            created_at: Utc::now(),
        };
        let messages: Vec<_> = (0..5).map(|i| ChatMessage::new(Role::User, format!("m{i}"))).collect();
        store
            .write_turn(&TurnWrite {
                new_stream: Some(stream.clone()),
                messages: messages.clone(),
                session_id: Some(session.id.clone()),
                stream_id: Some(stream.id.clone()),
                events: vec![
                    StoredEvent {
                        seq: 1,
                        data: "a".into(),
                    },
                    StoredEvent {
                        seq: 2,
                        data: "b".into(),
                    },
                ],
                finish: None,
                ..TurnWrite::default()
            })
            .unwrap();
        let loaded = store.list_messages(user(1), &session.id, None).unwrap().unwrap();
        assert_eq!(loaded, messages);
        let page = store
            .list_messages(user(1), &session.id, Some(Page { limit: 2, offset: 3 }))
            .unwrap()
            .unwrap();
        assert_eq!(page, messages[3..5].to_vec());
        let (record, events) = store.load_stream(user(1), &stream.id, 1).unwrap().unwrap();
        assert_eq!(record.status, StreamStatus::Running);
        assert_eq!(
            events,
            vec![StoredEvent {
                seq: 2,
                data: "b".into()
            }]
        );
        assert!(store.load_stream(user(2), &stream.id, 0).unwrap().is_none());
        assert_eq!(store.interrupt_running_streams().unwrap(), 1);
        let (record, _) = store.load_stream(user(1), &stream.id, 0).unwrap().unwrap();
        assert_eq!(record.status, StreamStatus::Interrupted);
    }

    #[test]
    fn concurrent_writers_never_see_database_locked() {
        let (_dir, store) = store();
        let store = std::sync::Arc::new(store);
        let session = Session::new(user(1), "Chat".into(), TitleSource::Default);
        store.create_session(&session).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = std::sync::Arc::clone(&store);
                let id = session.id.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        store
                            .write_turn(&TurnWrite {
                                messages: vec![ChatMessage::new(Role::User, format!("{i}"))],
                                session_id: Some(id.clone()),
                                ..TurnWrite::default()
                            })
                            .unwrap();
                        store
                            .list_messages(user(1), &id, Some(Page { limit: 5, offset: 0 }))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = store.list_messages(user(1), &session.id, None).unwrap().unwrap();
        assert_eq!(all.len(), 400);
    }
}

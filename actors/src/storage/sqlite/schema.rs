//! The SQLite schema as an ordered list of migrations, applied at start-up and tracked with
//! `PRAGMA user_version`. Table and column names follow the original where it had them.

use rusqlite::Connection;

use super::StorageError;

/// Migration `i` moves the schema from version `i` to `i + 1`. Append only; never edit.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE chat_sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    title        TEXT NOT NULL DEFAULT '',
    title_source TEXT NOT NULL DEFAULT 'default',
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX idx_chat_sessions_user_updated ON chat_sessions(user_id, updated_at DESC, id DESC);

CREATE TABLE chat_messages (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    session_id       TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    role             TEXT NOT NULL,
    content          TEXT NOT NULL,
    tool_calls       TEXT,
    tool_executions  TEXT,
    tool_call_id     TEXT,
    approval_request TEXT,
    usage            TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX idx_chat_messages_session ON chat_messages(session_id, seq);

CREATE TABLE chat_streams (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    session_id  TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX idx_chat_streams_status ON chat_streams(status);
CREATE INDEX idx_chat_streams_session ON chat_streams(session_id);

CREATE TABLE chat_stream_events (
    stream_id TEXT NOT NULL REFERENCES chat_streams(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (stream_id, seq)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE chat_messages ADD COLUMN status TEXT;
"#,
    r#"
CREATE TABLE tool_approvals (
    request_id TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    stream_id  TEXT NOT NULL,
    calls      TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT
);
CREATE INDEX idx_tool_approvals_user_status ON tool_approvals(user_id, status);
CREATE INDEX idx_tool_approvals_session ON tool_approvals(session_id, status);

CREATE TABLE tool_grants (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    session_id TEXT REFERENCES chat_sessions(id) ON DELETE CASCADE,
    tool       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX idx_tool_grants_user ON tool_grants(user_id);
"#,
    r#"
CREATE TABLE attachment_blobs (
    hash    TEXT PRIMARY KEY,
    content TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE chat_attachments (
    id           TEXT PRIMARY KEY,
    message_id   TEXT NOT NULL REFERENCES chat_messages(id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    mime_type    TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_hash TEXT NOT NULL REFERENCES attachment_blobs(hash),
    created_at   TEXT NOT NULL
);
CREATE INDEX idx_chat_attachments_message_id ON chat_attachments(message_id);
CREATE INDEX idx_chat_attachments_hash ON chat_attachments(content_hash);
"#,
    r#"
-- Providers an operator registered through the admin API (settings as JSON, never a key).
CREATE TABLE admin_records (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
"#,
];

/// The schema version this build expects.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database up to [`SCHEMA_VERSION`], each step in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX))?;
    if current > SCHEMA_VERSION {
        return Err(StorageError::Migration(format!(
            "database schema version {current} is newer than this build ({SCHEMA_VERSION})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StorageError::Migration(format!("step {}: {e}", version + 1)))?;
        tx.pragma_update(None, "user_version", i64::try_from(version + 1).unwrap_or(i64::MAX))?;
        tx.commit()?;
    }
    Ok(())
}

//! `SqliteStore`: the embedded [`ChatStore`] on SQLite through an r2d2 pool. WAL mode, a busy
//! timeout and `BEGIN IMMEDIATE` for every write keep concurrent chats from seeing
//! "database is locked"; WAL checkpoints (the only fsyncs under `synchronous = NORMAL`) run on a
//! background thread, so no turn waits for the disk.

mod rows;
mod schema;

pub use schema::SCHEMA_VERSION;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{AdminRecord, ChatStore, Page, StorageError, StoredEvent, StreamRecord, StreamStatus, TurnWrite};
use crate::approval::{ApprovalRecord, Grant, Remember};
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{ChatMessage, Session, TitleSource, format_time};
use crate::sync::lock_unpoisoned;
use rows::{
    APPROVAL_COLUMNS, MESSAGE_COLUMNS, SESSION_COLUMNS, approval_from_row, drop_orphan_blobs, load_attachments,
    message_from_row, optional_json, parse_time, parse_user, session_blob_hashes, session_from_row,
};

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the background thread checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// SQLite behind an r2d2 pool.
pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    /// Set by the checkpoint thread when the database file vanished or was replaced under us:
    /// from then on every operation fails (writes would go to an unlinked file and be lost).
    lost: Arc<OnceLock<String>>,
    /// Held by every write and by the checkpoint that empties the WAL: that checkpoint needs a
    /// moment with no writer, which SQLite's polling busy handler alone does not get under load.
    writers: Arc<Mutex<()>>,
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
/// done inside a commit it held that turn for 10–20 ms. Each round also checks that the database
/// file is still the one opened (same inode): a file deleted or replaced under a running server
/// marks the store `lost`.
fn spawn_checkpointer(
    path: &Path,
    lost: Arc<OnceLock<String>>,
    writers: Arc<Mutex<()>>,
) -> Result<std::sync::mpsc::Sender<()>, StorageError> {
    let conn = rusqlite::Connection::open(path)?;
    // A truncating checkpoint holds writers back while it waits for readers: never for long.
    conn.busy_timeout(TRUNCATE_WAIT)?;
    let opened = file_identity(path)
        .map_err(|err| StorageError::Unavailable(format!("cannot read {}: {err}", path.display())))?;
    let path = path.to_owned();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut last_passive = std::time::Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(WAL_CHECK_EVERY) {
                let gone = match file_identity(&path) {
                    Ok(now) if now == opened => None,
                    Ok(_) => Some(format!("the database file {} was replaced", path.display())),
                    Err(err) => Some(format!("the database file {} is gone ({err})", path.display())),
                };
                if let Some(reason) = gone {
                    tracing::error!(%reason, "storage lost: refusing every operation until restarted");
                    let _ = lost.set(reason);
                    return;
                }
                // Under steady load some reader always holds a snapshot, so a passive checkpoint
                // never lets the WAL start over and the file grows (about 220 MB/s measured at concurrency 64).
                // Past the limit, TRUNCATE waits (briefly: readers here are short) for the
                // readers to move on, copies the rest and empties the file.
                if wal_bytes(&wal) > WAL_TRUNCATE_BYTES {
                    // Copy what can be copied with writers running, so the gated part is short.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    // Writers wait at the gate (not in SQLite's busy loop) while it runs.
                    let _writers = lock_unpoisoned(&writers);
                    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0));
                    match result {
                        Ok(0) => tracing::trace!("WAL truncated"),
                        Ok(_) => tracing::debug!("WAL truncation waited too long; retrying"),
                        Err(err) => tracing::warn!(error = %err, "WAL truncation failed; retrying"),
                    }
                    last_passive = std::time::Instant::now();
                } else if last_passive.elapsed() >= CHECKPOINT_EVERY {
                    // PASSIVE: copies what no reader still needs, never blocks readers or writers.
                    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
                    }
                    last_passive = std::time::Instant::now();
                }
            }
        })
        .map_err(|err| StorageError::Unavailable(format!("cannot start the checkpoint thread: {err}")))?;
    Ok(stop)
}

/// The WAL is emptied once it grows past this; checked every `WAL_CHECK_EVERY`, so it stays
/// under this plus what a tenth of a second of writes adds.
const WAL_TRUNCATE_BYTES: u64 = 32 * 1024 * 1024;

/// How often the checkpoint thread looks at the WAL's size (and the database file's identity).
const WAL_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Longest a truncating checkpoint waits for readers (writers wait meanwhile); if they do not
/// move on by then it gives up and tries again at the next round.
const TRUNCATE_WAIT: Duration = Duration::from_millis(200);

/// The size of the WAL file (0 when there is none).
fn wal_bytes(wal: &Path) -> u64 {
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// The device and inode of a file: what stays the same while it is the same file.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
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
            schema::migrate(&mut conn)?;
        }
        let manager = SqliteConnectionManager::file(path).with_init(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.execute_batch(
                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;
                 PRAGMA journal_size_limit = 33554432;",
            )
        });
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(BUSY_TIMEOUT)
            .build(manager)?;
        let lost = Arc::new(OnceLock::new());
        let writers = Arc::new(Mutex::new(()));
        Ok(Self {
            pool,
            _checkpointer: spawn_checkpointer(path, Arc::clone(&lost), Arc::clone(&writers))?,
            lost,
            writers,
            _lock: lock,
        })
    }

    /// A connection for a write, with the writers' gate held (drop the gate after the commit).
    fn write_conn(
        &self,
    ) -> Result<(std::sync::MutexGuard<'_, ()>, PooledConnection<SqliteConnectionManager>), StorageError> {
        let gate = lock_unpoisoned(&self.writers);
        Ok((gate, self.conn()?))
    }

    fn conn(&self) -> Result<PooledConnection<SqliteConnectionManager>, StorageError> {
        if let Some(reason) = self.lost.get() {
            return Err(StorageError::Unavailable(reason.clone()));
        }
        Ok(self.pool.get()?)
    }
}

impl ChatStore for SqliteStore {
    fn create_session(&self, session: &Session) -> Result<(), StorageError> {
        let (_writing, conn) = self.write_conn()?;
        conn.execute(
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
        let (_writing, conn) = self.write_conn()?;
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
        let (_writing, mut conn) = self.write_conn()?;
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
        let (_writing, mut conn) = self.write_conn()?;
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
        let (_writing, mut conn) = self.write_conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        apply_turn_write(&tx, write)?;
        tx.commit()?;
        Ok(())
    }

    fn write_turns(&self, writes: &[TurnWrite]) -> Vec<Result<(), StorageError>> {
        let batch = || -> Result<Vec<Result<(), StorageError>>, StorageError> {
            let (_writing, mut conn) = self.write_conn()?;
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                // Each write in its own savepoint: one that fails (a conflict) leaves no trace and
                // fails alone.
                let savepoint = tx.savepoint()?;
                let result = apply_turn_write(&savepoint, write);
                if result.is_ok() {
                    savepoint.commit()?;
                }
                results.push(result);
            }
            tx.commit()?;
            Ok(results)
        };
        match batch() {
            Ok(results) => results,
            // Nothing of the batch was committed: every write failed.
            Err(err) => {
                let reason = err.to_string();
                (0..writes.len())
                    .map(|_| Err(StorageError::Unavailable(reason.clone())))
                    .collect()
            }
        }
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

    fn list_admin_records(&self, kind: &str) -> Result<Vec<AdminRecord>, StorageError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT kind, name, spec, updated_by, updated_at FROM admin_records WHERE kind = ?1 ORDER BY name",
        )?;
        let records = stmt
            .query_map(params![kind], |row| {
                Ok(AdminRecord {
                    kind: row.get(0)?,
                    name: row.get(1)?,
                    spec: row.get(2)?,
                    updated_by: row.get(3)?,
                    updated_at: parse_time(&row.get::<_, String>(4)?)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(records)
    }

    fn put_admin_record(&self, record: &AdminRecord, create: bool) -> Result<bool, StorageError> {
        let (_writing, conn) = self.write_conn()?;
        let sql = if create {
            "INSERT INTO admin_records (kind, name, spec, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, name) DO NOTHING"
        } else {
            "UPDATE admin_records SET spec = ?3, updated_by = ?4, updated_at = ?5 WHERE kind = ?1 AND name = ?2"
        };
        let changed = conn.execute(
            sql,
            params![
                record.kind,
                record.name,
                record.spec,
                record.updated_by,
                format_time(record.updated_at)
            ],
        )?;
        Ok(changed > 0)
    }

    fn delete_admin_record(&self, kind: &str, name: &str) -> Result<bool, StorageError> {
        let (_writing, conn) = self.write_conn()?;
        let changed = conn.execute(
            "DELETE FROM admin_records WHERE kind = ?1 AND name = ?2",
            params![kind, name],
        )?;
        Ok(changed > 0)
    }

    fn store_answer(&self, answered: &ApprovalRecord) -> Result<bool, StorageError> {
        let (_writing, conn) = self.write_conn()?;
        settle(&conn, answered, Settle::WhileItsStreamRuns)
    }

    fn delete_grant(&self, user: UserId, id: &str) -> Result<bool, StorageError> {
        let (_writing, conn) = self.write_conn()?;
        let changed = conn.execute(
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

    fn approvals_with_running_calls(&self) -> Result<Vec<ApprovalRecord>, StorageError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM tool_approvals WHERE calls LIKE '%\"outcome\":\"running\"%'"
        ))?;
        let rows = stmt.query_map([], approval_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().filter(ApprovalRecord::has_running).collect())
    }

    fn running_streams(&self) -> Result<Vec<(StreamRecord, Vec<StoredEvent>)>, StorageError> {
        let running: Vec<(String, String)> = {
            let conn = self.conn()?;
            let mut stmt = conn.prepare("SELECT id, user_id FROM chat_streams WHERE status = 'running'")?;
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut streams = Vec::with_capacity(running.len());
        for (id, user) in running {
            let user = parse_user(&user)?;
            if let Some(stream) = self.load_stream(user, &StreamId::from_raw(id), 0)? {
                streams.push(stream);
            }
        }
        Ok(streams)
    }

    fn ping(&self) -> Result<(), StorageError> {
        self.conn()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Which pending requests [`settle`] may settle.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Any that is still pending.
    Pending,
    /// One still pending whose stream still runs (a question asked during a call).
    WhileItsStreamRuns,
}

/// Replaces a pending request's calls, status and decider with `approval`'s; `false` when it was
/// not pending (or, as `which` says, its stream no longer runs).
fn settle(conn: &rusqlite::Connection, approval: &ApprovalRecord, which: Settle) -> Result<bool, StorageError> {
    let running = if which == Settle::WhileItsStreamRuns {
        " AND EXISTS (SELECT 1 FROM chat_streams s WHERE s.id = tool_approvals.stream_id AND s.status = 'running')"
    } else {
        ""
    };
    let changed = conn.execute(
        &format!(
            "UPDATE tool_approvals SET calls = ?1, status = ?2, decided_by = ?3, decided_at = ?4
             WHERE request_id = ?5 AND user_id = ?6 AND status = 'pending'{running}"
        ),
        params![
            serde_json::to_string(&approval.calls)?,
            approval.status.as_str(),
            approval.decided_by,
            approval.decided_at.map(format_time),
            approval.request_id,
            approval.user_id.to_string(),
        ],
    )?;
    Ok(changed > 0)
}

/// One turn write inside an open transaction (or savepoint): every row it adds or changes.
fn apply_turn_write(tx: &rusqlite::Connection, write: &TurnWrite) -> Result<(), StorageError> {
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
                approval.status.as_str(),
                format_time(approval.created_at),
                format_time(approval.expires_at),
                approval.decided_by,
                approval.decided_at.map(format_time),
            ],
        )?;
    }
    if let Some(approval) = &write.settle_approval
        && !settle(tx, approval, Settle::Pending)?
    {
        return Err(StorageError::Conflict(format!(
            "approval {} was already decided",
            approval.request_id
        )));
    }
    if let Some(approval) = &write.call_outcomes {
        tx.execute(
            "UPDATE tool_approvals SET calls = ?1 WHERE request_id = ?2 AND user_id = ?3",
            params![
                serde_json::to_string(&approval.calls)?,
                approval.request_id,
                approval.user_id.to_string(),
            ],
        )?;
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
    Ok(())
}

//! `PostgresStore`: the [`ChatStore`] on PostgreSQL (the original's engine) through an r2d2 pool
//! of sync `postgres` clients, on the storage actor's threads like SQLite. Every write path that is
//! one transaction on SQLite is one here; a deadlock or serialization failure is retried a few
//! times; a lost connection is dropped by the pool and the operation fails as `Unavailable`
//! (503 `storage_unavailable`) until the database answers again.
//!
//! Several nodes may share one database: each turn holds its session's lease (`session_leases`,
//! a fencing token every write of the turn carries), events are announced with `NOTIFY`, and a
//! node ends the turns of a node whose leases lapsed.

mod connection;
mod listen;
mod rows;
mod schema;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use postgres::IsolationLevel;
use postgres::error::SqlState;
use postgres::types::{Json, ToSql};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use connection::{CachingManager, Queries, Tx};

use super::{AdminRecord, ChatStore, Fence, OrphanTurn, Page, StorageError, StoredEvent, StreamRecord, TurnWrite};
use crate::approval::{ApprovalRecord, Grant, Remember};
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{ChatMessage, Session, TitleSource};
use rows::{
    APPROVAL_COLUMNS, MESSAGE_COLUMNS, SESSION_COLUMNS, STREAM_COLUMNS, approval_from_row, jsonb_or_null,
    message_from_row, parse_user, session_from_row, stream_from_row,
};

/// How long one connection attempt may take (a remote server, TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation waits for a connection from the pool before it fails as unavailable:
/// with the database down, a request gets its 503 after this, not after a long hang.
const POOL_WAIT: Duration = Duration::from_secs(2);

/// Longest any statement may run: a blocked query must not hold a storage thread for good.
const STATEMENT_TIMEOUT: &str = "-c statement_timeout=30s -c idle_in_transaction_session_timeout=60s";

/// How often a transaction that lost a deadlock or a serialization check is tried again.
const RETRIES: usize = 3;

/// The channel that carries "events committed" notices (`stream_id:seq:unix_micros`).
const EVENTS_CHANNEL: &str = "aichat_events";

/// The channel that carries cancel requests (the stream id).
const CANCEL_CHANNEL: &str = "aichat_cancel";
/// Payload `<stream id> <elicitation id>`.
const ANSWER_CHANNEL: &str = "aichat_answer";

/// What a connection needs besides the URL.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The password, when the URL has none (from `PGPASSWORD` or `database.password_env`).
    pub password: Option<String>,
    /// Connections in the pool.
    pub pool_size: u32,
    /// This node's id in the leases it holds.
    pub node_id: String,
    /// How long a lease lasts unless renewed (a dead node's turns are taken over after it).
    pub lease: Duration,
    /// Turns one user may have running at once on all nodes together (0: no cap).
    pub max_running_per_user: u32,
    /// Turns one user may start per minute on all nodes together (0: no limit).
    pub turns_per_minute_per_user: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            password: None,
            pool_size: 4,
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            lease: Duration::from_secs(10),
            max_running_per_user: 0,
            turns_per_minute_per_user: 0,
        }
    }
}

/// PostgreSQL behind an r2d2 pool.
///
/// Its methods block on the `postgres` client's own runtime, which tokio refuses inside an async
/// task: call them from the storage actor's threads, `spawn_blocking` or a plain thread.
pub struct PostgresStore {
    /// `None` only while dropping.
    open: Option<Pool<CachingManager>>,
    /// Where to connect (the listener opens its own connection).
    config: postgres::Config,
    tls: MakeRustlsConnect,
    node_id: String,
    /// The lease length, in seconds, as PostgreSQL takes an interval.
    lease_secs: f64,
    /// Per-user limits, counted across nodes (0: off).
    max_running_per_user: u32,
    turns_per_minute_per_user: u32,
}

/// Closing a client blocks on its runtime too: the last handle may be dropped anywhere (an actor
/// on an async thread), so the connections are closed on a plain thread, waited for.
impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            let _ = std::thread::spawn(move || drop(open)).join();
        }
    }
}

/// A `postgres://` (or `postgresql://`) URL, checked: where it leads and whether it carries a
/// password, for the start-up checks and log lines (which never show the password).
pub struct PostgresUrl(postgres::Config);

impl PostgresUrl {
    /// Parses a URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("a PostgreSQL URL starts with postgres:// or postgresql://".into());
        }
        postgres::Config::from_str(url)
            .map(Self)
            .map_err(|err| format!("not a valid PostgreSQL URL: {err}"))
    }

    /// Whether the URL itself carries a password.
    pub fn has_password(&self) -> bool {
        self.0.get_password().is_some()
    }

    /// `postgres://host:port/database`, without user or password.
    pub fn describe(&self) -> String {
        describe(&self.0)
    }
}

impl PostgresStore {
    /// Connects and migrates the database to the current schema.
    pub fn open(url: &str, options: &PostgresOptions) -> Result<Self, StorageError> {
        let PostgresUrl(mut config) = PostgresUrl::parse(url).map_err(StorageError::Unavailable)?;
        if config.get_password().is_none()
            && let Some(password) = &options.password
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_options().is_none() {
            config.options(STATEMENT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("aichat");
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let tls = tls_connector()?;
        let mut first = config.connect(tls.clone())?;
        schema::migrate(&mut first)?;
        drop(first);
        let pool = Pool::builder()
            .max_size(options.pool_size.max(1))
            .connection_timeout(POOL_WAIT)
            .build(CachingManager(PostgresConnectionManager::new(
                config.clone(),
                tls.clone(),
            )))?;
        Ok(Self {
            open: Some(pool),
            config,
            tls,
            node_id: options.node_id.clone(),
            lease_secs: options.lease.as_secs_f64().max(1.0),
            max_running_per_user: options.max_running_per_user,
            turns_per_minute_per_user: options.turns_per_minute_per_user,
        })
    }

    /// This node's id in the leases.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Starts the thread that listens for other nodes' notices (on its own connection, opened
    /// again with a back-off when lost) and hands each to `on_notice`.
    pub fn listen(&self, on_notice: impl Fn(super::Notice) + Send + 'static) {
        listen::spawn(self.config.clone(), self.tls.clone(), on_notice);
    }

    fn conn(&self) -> Result<PooledConnection<CachingManager>, StorageError> {
        let open = self
            .open
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("the store is closed".into()))?;
        Ok(open.get()?)
    }

    /// Runs `work` in one transaction, again (up to `RETRIES` times) when it lost a deadlock
    /// or a serialization check: each try starts from nothing, so a retry never applies twice.
    fn in_transaction<T>(
        &self,
        isolation: IsolationLevel,
        mut work: impl FnMut(&mut Tx<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn()?;
        let mut tries = 0;
        loop {
            tries += 1;
            let result = (|| -> Result<T, StorageError> {
                let mut tx = conn.begin(isolation)?;
                let value = work(&mut tx)?;
                tx.commit()?;
                Ok(value)
            })();
            match result {
                Err(err) if tries <= RETRIES && err.is_transient() => {
                    tracing::debug!(error = %err, tries, "retrying a PostgreSQL transaction");
                }
                other => return other,
            }
        }
    }

    /// A write in one transaction.
    fn write<T>(&self, work: impl FnMut(&mut Tx<'_>) -> Result<T, StorageError>) -> Result<T, StorageError> {
        self.in_transaction(IsolationLevel::ReadCommitted, work)
    }

    /// Reads that must agree with each other (one snapshot).
    fn read<T>(&self, work: impl FnMut(&mut Tx<'_>) -> Result<T, StorageError>) -> Result<T, StorageError> {
        self.in_transaction(IsolationLevel::RepeatableRead, work)
    }
}

/// Where the database is, for messages: never the password.
fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{host}:{port}/{db}")
}

/// TLS for `sslmode=prefer|require`, with the system's root certificates (not read at all for
/// `sslmode=disable`, where no handshake happens).
fn tls_connector() -> Result<MakeRustlsConnect, StorageError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| StorageError::Unavailable(format!("TLS set-up failed: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn user_text(user: UserId) -> String {
    user.to_string()
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl ChatStore for PostgresStore {
    fn create_session(&self, session: &Session) -> Result<(), StorageError> {
        self.conn()?.execute(
            "INSERT INTO chat_sessions (id, user_id, title, title_source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &session.id.as_str(),
                &user_text(session.user_id),
                &session.title,
                &session.title_source.as_str(),
                &session.created_at,
                &session.updated_at,
            ],
        )?;
        Ok(())
    }

    fn get_session(&self, user: UserId, id: &SessionId) -> Result<Option<Session>, StorageError> {
        self.conn()?
            .query_opt(
                &format!("SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE id = $1 AND user_id = $2"),
                &[&id.as_str(), &user_text(user)],
            )?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    fn list_sessions(&self, user: UserId, page: Page) -> Result<(Vec<Session>, u64), StorageError> {
        self.read(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE user_id = $1
                     ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3"
                ),
                &[&user_text(user), &i64::from(page.limit), &seq_param(page.offset)],
            )?;
            let sessions = rows.iter().map(session_from_row).collect::<Result<Vec<_>, _>>()?;
            let total: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM chat_sessions WHERE user_id = $1",
                    &[&user_text(user)],
                )?
                .get(0);
            Ok((sessions, u64::try_from(total).unwrap_or(0)))
        })
    }

    fn set_title(&self, user: UserId, id: &SessionId, title: &str, source: TitleSource) -> Result<bool, StorageError> {
        let mut conn = self.conn()?;
        let changed = match source {
            TitleSource::Generated => conn.execute(
                "UPDATE chat_sessions SET title = $1, title_source = 'generated'
                 WHERE id = $2 AND user_id = $3 AND title_source = 'default'",
                &[&title, &id.as_str(), &user_text(user)],
            )?,
            TitleSource::User | TitleSource::Default => conn.execute(
                "UPDATE chat_sessions SET title = $1, title_source = $2, updated_at = $3
                 WHERE id = $4 AND user_id = $5",
                &[
                    &title,
                    &source.as_str(),
                    &crate::model::now(),
                    &id.as_str(),
                    &user_text(user),
                ],
            )?,
        };
        Ok(changed > 0)
    }

    fn delete_session(&self, user: UserId, id: &SessionId) -> Result<bool, StorageError> {
        // Messages, attachments, streams, approvals and grants go with it (ON DELETE CASCADE).
        let changed = self.conn()?.execute(
            "DELETE FROM chat_sessions WHERE id = $1 AND user_id = $2",
            &[&id.as_str(), &user_text(user)],
        )?;
        Ok(changed > 0)
    }

    fn list_messages(
        &self,
        user: UserId,
        id: &SessionId,
        page: Option<Page>,
    ) -> Result<Option<Vec<ChatMessage>>, StorageError> {
        self.read(|tx| {
            let owned = tx.query_opt(
                "SELECT 1 FROM chat_sessions WHERE id = $1 AND user_id = $2",
                &[&id.as_str(), &user_text(user)],
            )?;
            if owned.is_none() {
                return Ok(None);
            }
            // `LIMIT NULL` is no limit.
            let limit: Option<i64> = page.map(|p| i64::from(p.limit));
            let offset = page.map_or(0, |p| seq_param(p.offset));
            let rows = tx.query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE session_id = $1
                     ORDER BY seq LIMIT $2 OFFSET $3"
                ),
                &[&id.as_str(), &limit, &offset],
            )?;
            let mut messages = rows.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
            load_attachments(tx, &mut messages)?;
            Ok(Some(messages))
        })
    }

    fn clear_messages(&self, user: UserId, id: &SessionId) -> Result<bool, StorageError> {
        self.write(|tx| {
            let owned = tx.execute(
                "UPDATE chat_sessions SET updated_at = $1 WHERE id = $2 AND user_id = $3",
                &[&crate::model::now(), &id.as_str(), &user_text(user)],
            )?;
            if owned == 0 {
                return Ok(false);
            }
            tx.execute("DELETE FROM chat_messages WHERE session_id = $1", &[&id.as_str()])?;
            // Every node's copy of the session is now stale: its next turn reads it again (and a
            // turn running elsewhere can write no more).
            tx.execute(
                "INSERT INTO session_leases (session_id, node_id, token, stream_id, expires_at)
                 VALUES ($1, $2, 1, NULL, NOW())
                 ON CONFLICT (session_id) DO UPDATE SET token = session_leases.token + 1",
                &[&id.as_str(), &self.node_id],
            )?;
            Ok(true)
        })
    }

    fn write_turn(&self, write: &TurnWrite) -> Result<(), StorageError> {
        self.write(|tx| {
            apply_turn_write(tx, write, self)?;
            announce_events(tx, std::slice::from_ref(write))
        })
    }

    fn write_turns(&self, writes: &[TurnWrite]) -> Vec<Result<(), StorageError>> {
        // One transaction for the batch, without a savepoint per write (two round trips each):
        // a write fails before it changes anything when it conflicts, so a batch that fails on
        // the database's word (not on a lost connection) is written again one write at a time,
        // and only the writes that fail alone fail.
        let batch = self.write(|tx| {
            writes.iter().try_for_each(|write| apply_turn_write(tx, write, self))?;
            announce_events(tx, writes)
        });
        match batch {
            Ok(()) => writes.iter().map(|_| Ok(())).collect(),
            Err(err) if writes.len() == 1 => vec![Err(err)],
            Err(err) if err.is_refusal() => writes.iter().map(|write| self.write_turn(write)).collect(),
            // Nothing of the batch was committed: every write failed.
            Err(err) => {
                let reason = err.to_string();
                (0..writes.len())
                    .map(|_| Err(StorageError::Unavailable(reason.clone())))
                    .collect()
            }
        }
    }

    fn load_stream(
        &self,
        user: UserId,
        id: &StreamId,
        after_seq: u64,
    ) -> Result<Option<(StreamRecord, Vec<StoredEvent>)>, StorageError> {
        self.read(|tx| load_stream_in(tx, user, id, after_seq))
    }

    fn get_approval(&self, user: UserId, request_id: &str) -> Result<Option<ApprovalRecord>, StorageError> {
        // The original UI names a request by its history row too: the `tool_approval` message's
        // id, or `historical_<that id>`; both lead to the request the row records.
        let id = request_id.strip_prefix("historical_").unwrap_or(request_id);
        self.conn()?
            .query_opt(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM tool_approvals
                     WHERE user_id = $2 AND request_id = COALESCE(
                         (SELECT m.approval_request->>'request_id' FROM chat_messages m
                          WHERE m.id = $1 AND m.role = 'tool_approval'),
                         $1)"
                ),
                &[&id, &user_text(user)],
            )?
            .as_ref()
            .map(approval_from_row)
            .transpose()
    }

    fn pending_approval(&self, user: UserId, session: &SessionId) -> Result<Option<ApprovalRecord>, StorageError> {
        self.conn()?
            .query_opt(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM tool_approvals
                     WHERE session_id = $1 AND user_id = $2 AND status = 'pending'
                     ORDER BY created_at DESC LIMIT 1"
                ),
                &[&session.as_str(), &user_text(user)],
            )?
            .as_ref()
            .map(approval_from_row)
            .transpose()
    }

    fn list_approvals(&self, user: UserId, status: Option<&str>) -> Result<Vec<ApprovalRecord>, StorageError> {
        self.conn()?
            .query(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM tool_approvals
                     WHERE user_id = $1 AND ($2::TEXT IS NULL OR status = $2)
                     ORDER BY created_at DESC LIMIT 500"
                ),
                &[&user_text(user), &status],
            )?
            .iter()
            .map(approval_from_row)
            .collect()
    }

    fn list_grants(&self, user: UserId) -> Result<Vec<Grant>, StorageError> {
        self.conn()?
            .query(
                "SELECT id, tool, session_id, created_at FROM tool_grants WHERE user_id = $1 ORDER BY created_at, id",
                &[&user_text(user)],
            )?
            .iter()
            .map(|row| {
                let session: Option<String> = row.try_get(2)?;
                Ok(Grant {
                    id: row.try_get(0)?,
                    tool: row.try_get(1)?,
                    scope: if session.is_some() {
                        Remember::Session
                    } else {
                        Remember::User
                    },
                    session_id: session.map(SessionId::from_raw),
                    created_at: row.try_get(3)?,
                })
            })
            .collect()
    }

    fn list_admin_records(&self, kind: &str) -> Result<Vec<AdminRecord>, StorageError> {
        self.conn()?
            .query(
                "SELECT kind, name, spec::TEXT, updated_by, updated_at FROM admin_records WHERE kind = $1 ORDER BY name",
                &[&kind],
            )?
            .iter()
            .map(|row| {
                Ok(AdminRecord {
                    kind: row.try_get(0)?,
                    name: row.try_get(1)?,
                    spec: row.try_get(2)?,
                    updated_by: row.try_get(3)?,
                    updated_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    fn put_admin_record(&self, record: &AdminRecord, create: bool) -> Result<bool, StorageError> {
        let sql = if create {
            "INSERT INTO admin_records (kind, name, spec, updated_by, updated_at)
             VALUES ($1, $2, $3::TEXT::JSONB, $4, $5) ON CONFLICT (kind, name) DO NOTHING"
        } else {
            "UPDATE admin_records SET spec = $3::TEXT::JSONB, updated_by = $4, updated_at = $5
             WHERE kind = $1 AND name = $2"
        };
        let changed = self.conn()?.execute(
            sql,
            &[
                &record.kind,
                &record.name,
                &record.spec,
                &record.updated_by,
                &record.updated_at,
            ],
        )?;
        Ok(changed > 0)
    }

    fn delete_admin_record(&self, kind: &str, name: &str) -> Result<bool, StorageError> {
        let changed = self.conn()?.execute(
            "DELETE FROM admin_records WHERE kind = $1 AND name = $2",
            &[&kind, &name],
        )?;
        Ok(changed > 0)
    }

    fn delete_grant(&self, user: UserId, id: &str) -> Result<bool, StorageError> {
        let changed = self.conn()?.execute(
            "DELETE FROM tool_grants WHERE id = $1 AND user_id = $2",
            &[&id, &user_text(user)],
        )?;
        Ok(changed > 0)
    }

    fn approvals_with_running_calls(&self) -> Result<Vec<ApprovalRecord>, StorageError> {
        let records = self
            .conn()?
            .query(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM tool_approvals
                     WHERE calls::TEXT LIKE '%\"running\"%'"
                ),
                &[],
            )?
            .iter()
            .map(approval_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(records.into_iter().filter(ApprovalRecord::has_running).collect())
    }

    fn running_streams(&self) -> Result<Vec<(StreamRecord, Vec<StoredEvent>)>, StorageError> {
        self.read(|tx| {
            let running = tx.query("SELECT id, user_id FROM chat_streams WHERE status = 'running'", &[])?;
            let mut streams = Vec::with_capacity(running.len());
            for row in &running {
                let user = parse_user(row.try_get(1)?)?;
                let id = StreamId::from_raw(row.try_get::<_, String>(0)?);
                if let Some(stream) = load_stream_in(tx, user, &id, 0)? {
                    streams.push(stream);
                }
            }
            Ok(streams)
        })
    }

    fn ping(&self) -> Result<(), StorageError> {
        self.conn()?.simple_query("SELECT 1")
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn lease_token(&self, session: &SessionId) -> Result<u64, StorageError> {
        let token: Option<i64> = self
            .conn()?
            .query_opt(
                "SELECT token FROM session_leases WHERE session_id = $1",
                &[&session.as_str()],
            )?
            .map(|row| row.try_get(0))
            .transpose()?;
        Ok(token.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
    }

    fn claim_orphaned_turns(&self, at_start: bool) -> Result<Vec<OrphanTurn>, StorageError> {
        self.write(|tx| {
            // Running streams whose session lease lapsed or points elsewhere (or, at start-up,
            // is this node's own from before a restart); rows another node is claiming are skipped.
            let rows = tx.query(
                "SELECT s.id, s.user_id, s.session_id FROM chat_streams s
                 LEFT JOIN session_leases l ON l.session_id = s.session_id
                 WHERE s.status = 'running'
                   AND (l.session_id IS NULL OR l.stream_id IS DISTINCT FROM s.id
                        OR l.expires_at < NOW() OR ($2 AND l.node_id = $1))
                 ORDER BY s.created_at
                 FOR UPDATE OF s SKIP LOCKED",
                &[&self.node_id, &at_start],
            )?;
            let mut orphans = Vec::with_capacity(rows.len());
            for row in &rows {
                let id = StreamId::from_raw(row.try_get::<_, String>(0)?);
                let user = parse_user(row.try_get(1)?)?;
                let session = SessionId::from_raw(row.try_get::<_, String>(2)?);
                let token = claim_lease(tx, self, &session, &id, None)?
                    .ok_or_else(|| StorageError::Stale(format!("session {session} was claimed meanwhile")))?;
                if let Some((record, events)) = load_stream_in(tx, user, &id, 0)? {
                    let fence = Fence {
                        session_id: session,
                        token,
                        claim: false,
                        admit: false,
                    };
                    orphans.push((record, events, Some(fence)));
                }
            }
            if !at_start && !orphans.is_empty() {
                metrics::counter!("aichat_lease_takeovers_total").increment(orphans.len() as u64);
            }
            Ok(orphans)
        })
    }

    fn renew_leases(&self, running: &[StreamId]) -> Result<Vec<StreamId>, StorageError> {
        let ids: Vec<&str> = running.iter().map(StreamId::as_str).collect();
        let rows = self.conn()?.query(
            "UPDATE session_leases l SET expires_at = NOW() + make_interval(secs => $3)
             FROM chat_streams s
             WHERE l.node_id = $1 AND l.stream_id = ANY($2) AND s.id = l.stream_id
             RETURNING s.id, s.cancel_requested",
            &[&self.node_id, &ids, &self.lease_secs],
        )?;
        let mut cancel = Vec::new();
        for row in &rows {
            if row.try_get::<_, bool>(1)? {
                cancel.push(StreamId::from_raw(row.try_get::<_, String>(0)?));
            }
        }
        Ok(cancel)
    }

    fn request_cancel(&self, user: UserId, id: &StreamId) -> Result<bool, StorageError> {
        self.write(|tx| {
            let flagged = tx.execute(
                "UPDATE chat_streams SET cancel_requested = TRUE
                 WHERE id = $1 AND user_id = $2 AND status = 'running'",
                &[&id.as_str(), &user_text(user)],
            )?;
            if flagged > 0 {
                tx.execute("SELECT pg_notify($1, $2)", &[&CANCEL_CHANNEL, &id.as_str()])?;
            }
            Ok(flagged > 0)
        })
    }

    fn store_answer(&self, answered: &ApprovalRecord) -> Result<bool, StorageError> {
        self.write(|tx| {
            let settled = settle(tx, answered, Settle::WhileItsStreamRuns)?;
            if settled {
                let payload = format!("{} {}", answered.stream_id, answered.request_id);
                tx.execute("SELECT pg_notify($1, $2)", &[&ANSWER_CHANNEL, &payload])?;
            }
            Ok(settled)
        })
    }
}

/// Takes (or with `expect`, checks it takes) the session's lease for `stream`: the token goes up
/// by one. `None` when another turn holds it and `expect` is set (a new turn); without `expect`
/// (taking over an orphan) it is taken whoever held it.
fn claim_lease(
    tx: &mut Tx<'_>,
    store: &PostgresStore,
    session: &SessionId,
    stream: &StreamId,
    expect: Option<u64>,
) -> Result<Option<u64>, StorageError> {
    let row = tx.query_opt(
        "INSERT INTO session_leases (session_id, node_id, token, stream_id, expires_at)
         VALUES ($1, $2, 1, $3, NOW() + make_interval(secs => $4))
         ON CONFLICT (session_id) DO UPDATE SET
             node_id = EXCLUDED.node_id, token = session_leases.token + 1,
             stream_id = EXCLUDED.stream_id, expires_at = EXCLUDED.expires_at
         WHERE session_leases.stream_id IS NULL OR NOT $5
         RETURNING token",
        &[
            &session.as_str(),
            &store.node_id,
            &stream.as_str(),
            &store.lease_secs,
            &expect.is_some(),
        ],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let token = u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
    match expect {
        Some(expected) if expected != token => Err(StorageError::Stale(format!(
            "session {session}: lease token {token}, this node expected {expected}"
        ))),
        _ => Ok(Some(token)),
    }
}

/// Checks a write's fence before it changes anything: takes the lease for a turn's first write,
/// gives it back with its last (`finish`), checks the token for the others.
fn check_fence(tx: &mut Tx<'_>, store: &PostgresStore, fence: &Fence, write: &TurnWrite) -> Result<(), StorageError> {
    let token = i64::try_from(fence.token).unwrap_or(i64::MAX);
    let session = fence.session_id.as_str();
    if fence.claim {
        let stream = write
            .new_stream
            .as_ref()
            .map(|s| &s.id)
            .or(write.stream_id.as_ref())
            .ok_or_else(|| StorageError::Corrupt("a lease claim without a stream".into()))?;
        if claim_lease(tx, store, &fence.session_id, stream, Some(fence.token))?.is_none() {
            return Err(StorageError::Busy);
        }
        if let Some(new) = write.new_stream.as_ref().filter(|_| fence.admit) {
            admit_user(tx, store, new.user_id)?;
        }
        return Ok(());
    }
    let held = if write.finish.is_some() {
        tx.execute(
            "UPDATE session_leases SET stream_id = NULL WHERE session_id = $1 AND token = $2",
            &[&session, &token],
        )? > 0
    } else {
        tx.query_opt(
            "SELECT 1 FROM session_leases WHERE session_id = $1 AND token = $2 FOR SHARE",
            &[&session, &token],
        )?
        .is_some()
    };
    if held {
        Ok(())
    } else {
        Err(StorageError::Stale(format!(
            "session {session}: lease token {} was taken over",
            fence.token
        )))
    }
}

/// Counts a new turn against the user's limits on every node together: turns running at once
/// (the running streams) and turns per minute (a token bucket row). Users are serialised by a
/// transaction-scoped advisory lock, so two nodes admitting at once cannot both take the last place.
fn admit_user(tx: &mut Tx<'_>, store: &PostgresStore, user: UserId) -> Result<(), StorageError> {
    let (max_running, per_minute) = (store.max_running_per_user, store.turns_per_minute_per_user);
    if max_running == 0 && per_minute == 0 {
        return Ok(());
    }
    let user = user_text(user);
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&user])?;
    if max_running > 0 {
        let running: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM chat_streams WHERE user_id = $1 AND status = 'running'",
                &[&user],
            )?
            .try_get(0)?;
        if running >= i64::from(max_running) {
            return Err(StorageError::Limited {
                reason: "too many turns running at once",
                retry_after: 1,
            });
        }
    }
    if per_minute > 0 {
        let capacity = f64::from(per_minute);
        let rate = capacity / 60.0;
        let tokens: f64 = tx
            .query_one(
                "INSERT INTO user_turn_buckets AS b (user_id, tokens, refilled_at) VALUES ($1, $2, NOW())
                 ON CONFLICT (user_id) DO UPDATE SET
                     tokens = LEAST($2, b.tokens + EXTRACT(EPOCH FROM NOW() - b.refilled_at)::FLOAT8 * $3),
                     refilled_at = NOW()
                 RETURNING tokens",
                &[&user, &capacity, &rate],
            )?
            .try_get(0)?;
        if tokens < 1.0 {
            let wait = ((1.0 - tokens) / rate).ceil().max(1.0);
            return Err(StorageError::Limited {
                reason: "too many turns this minute",
                retry_after: wait as u64,
            });
        }
        tx.execute(
            "UPDATE user_turn_buckets SET tokens = tokens - 1 WHERE user_id = $1",
            &[&user],
        )?;
    }
    Ok(())
}

/// Tells listening nodes which streams got events in this transaction (delivered at commit):
/// one notice per stream with its last sequence number, never the text.
fn announce_events(tx: &mut Tx<'_>, writes: &[TurnWrite]) -> Result<(), StorageError> {
    let at = Utc::now().timestamp_micros();
    let mut last: Vec<(&str, u64)> = Vec::new();
    for write in writes {
        let (Some(stream), Some(event)) = (&write.stream_id, write.events.last()) else {
            continue;
        };
        match last.iter_mut().find(|(id, _)| *id == stream.as_str()) {
            Some(entry) => entry.1 = entry.1.max(event.seq),
            None => last.push((stream.as_str(), event.seq)),
        }
    }
    if last.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = last.iter().map(|(id, seq)| format!("{id}:{seq}:{at}")).collect();
    tx.execute(
        "SELECT pg_notify($1, p) FROM UNNEST($2::TEXT[]) AS p",
        &[&EVENTS_CHANNEL, &payloads],
    )?;
    Ok(())
}

/// A stream of `user` and its events after `after_seq`, inside a transaction.
fn load_stream_in(
    tx: &mut Tx<'_>,
    user: UserId,
    id: &StreamId,
    after_seq: u64,
) -> Result<Option<(StreamRecord, Vec<StoredEvent>)>, StorageError> {
    let Some(row) = tx.query_opt(
        &format!("SELECT {STREAM_COLUMNS} FROM chat_streams WHERE id = $1 AND user_id = $2"),
        &[&id.as_str(), &user_text(user)],
    )?
    else {
        return Ok(None);
    };
    let record = stream_from_row(&row)?;
    let events = tx
        .query(
            "SELECT seq, data FROM chat_stream_events WHERE stream_id = $1 AND seq > $2 ORDER BY seq",
            &[&id.as_str(), &seq_param(after_seq)],
        )?
        .iter()
        .map(|row| {
            Ok(StoredEvent {
                seq: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                data: row.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(Some((record, events)))
}

/// Fills in the attachments of `messages` with one query.
fn load_attachments(tx: &mut Tx<'_>, messages: &mut [ChatMessage]) -> Result<(), StorageError> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let rows = tx.query(
        "SELECT message_id, id, filename, mime_type, size, content FROM chat_attachments
         WHERE message_id = ANY($1) ORDER BY seq",
        &[&ids],
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    let index: std::collections::HashMap<String, usize> =
        messages.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect();
    for row in &rows {
        let message_id: &str = row.try_get(0)?;
        if let Some(&i) = index.get(message_id) {
            messages[i].attachments.push(crate::attachment::Attachment {
                id: row.try_get(1)?,
                filename: row.try_get(2)?,
                mime_type: row.try_get(3)?,
                size: row.try_get(4)?,
                content: row.try_get(5)?,
            });
        }
    }
    Ok(())
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
fn settle(tx: &mut Tx<'_>, approval: &ApprovalRecord, which: Settle) -> Result<bool, StorageError> {
    let running = if which == Settle::WhileItsStreamRuns {
        " AND EXISTS (SELECT 1 FROM chat_streams s WHERE s.id = a.stream_id AND s.status = 'running')"
    } else {
        ""
    };
    let changed = tx.execute(
        &format!(
            "UPDATE tool_approvals a SET calls = $1, status = $2, decided_by = $3, decided_at = $4
             WHERE a.request_id = $5 AND a.user_id = $6 AND a.status = 'pending'{running}"
        ),
        &[
            &Json(&approval.calls),
            &approval.status.as_str(),
            &approval.decided_by,
            &approval.decided_at,
            &approval.request_id,
            &user_text(approval.user_id),
        ],
    )?;
    Ok(changed > 0)
}

/// One turn write inside an open transaction: every row it adds or changes.
fn apply_turn_write(tx: &mut Tx<'_>, write: &TurnWrite, store: &PostgresStore) -> Result<(), StorageError> {
    // First the lease: a node whose copy of the session is stale learns so before anything else
    // (it reads the session again and may find the approval it would settle already decided).
    if let Some(fence) = &write.fence {
        check_fence(tx, store, fence, write)?;
    }
    // Then: a write that settles an approval someone else settled changes nothing at all.
    if let Some(approval) = &write.settle_approval
        && !settle(tx, approval, Settle::Pending)?
    {
        return Err(StorageError::Conflict(format!(
            "approval {} was already decided",
            approval.request_id
        )));
    }
    if let Some(stream) = &write.new_stream {
        tx.execute(
            "INSERT INTO chat_streams (id, user_id, session_id, status, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &stream.id.as_str(),
                &user_text(stream.user_id),
                &stream.session_id.as_str(),
                &stream.status.as_str(),
                &stream.created_at,
            ],
        )?;
    }
    if let Some(session_id) = &write.session_id
        && !write.messages.is_empty()
    {
        insert_messages(tx, session_id, &write.messages)?;
        tx.execute(
            "UPDATE chat_sessions SET updated_at = $1 WHERE id = $2",
            &[&Utc::now(), &session_id.as_str()],
        )?;
    }
    if let Some(stream_id) = &write.stream_id {
        if !write.events.is_empty() {
            // All of them in one statement: a round trip per event would be most of the cost.
            let seqs: Vec<i64> = write.events.iter().map(|e| seq_param(e.seq)).collect();
            let data: Vec<&str> = write.events.iter().map(|e| e.data.as_str()).collect();
            tx.execute(
                "INSERT INTO chat_stream_events (stream_id, seq, data)
                 SELECT $1, e.seq, e.data FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS e(seq, data)
                 ON CONFLICT DO NOTHING",
                &[&stream_id.as_str(), &seqs, &data],
            )?;
        }
        if let Some(status) = write.finish {
            tx.execute(
                "UPDATE chat_streams SET status = $1, finished_at = $2 WHERE id = $3",
                &[&status.as_str(), &Utc::now(), &stream_id.as_str()],
            )?;
        }
    }
    if let Some(approval) = &write.new_approval {
        tx.execute(
            &format!(
                "INSERT INTO tool_approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            &[
                &approval.request_id,
                &user_text(approval.user_id),
                &approval.session_id.as_str(),
                &approval.stream_id.as_str(),
                &Json(&approval.calls),
                &approval.status.as_str(),
                &approval.created_at,
                &approval.expires_at,
                &approval.decided_by,
                &approval.decided_at,
            ],
        )?;
    }
    if let Some(approval) = &write.call_outcomes {
        tx.execute(
            "UPDATE tool_approvals SET calls = $1 WHERE request_id = $2 AND user_id = $3",
            &[
                &Json(&approval.calls),
                &approval.request_id,
                &user_text(approval.user_id),
            ],
        )?;
    }
    for (user, session, tool) in &write.new_grants {
        tx.execute(
            "INSERT INTO tool_grants (id, user_id, session_id, tool, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &crate::ids::prefixed_id("grant"),
                &user_text(*user),
                &session.as_ref().map(SessionId::as_str),
                tool,
                &Utc::now(),
            ],
        )?;
    }
    Ok(())
}

/// A turn's messages and their attachments, in order.
fn insert_messages(tx: &mut Tx<'_>, session_id: &SessionId, messages: &[ChatMessage]) -> Result<(), StorageError> {
    const INSERT: &str = "INSERT INTO chat_messages
             (id, session_id, role, content, tool_calls, tool_executions, tool_call_id, usage, created_at, status,
              approval_request)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
    for message in messages {
        let params: [&(dyn ToSql + Sync); 11] = [
            &message.id,
            &session_id.as_str(),
            &message.role.as_str(),
            &message.content,
            &jsonb_or_null(&message.tool_calls),
            &jsonb_or_null(&message.tool_executions),
            &message.tool_call_id,
            &message.usage.as_ref().map(Json),
            &message.timestamp,
            &message.status,
            &message.approval_request.as_ref().map(Json),
        ];
        tx.execute(INSERT, &params)?;
        for attachment in &message.attachments {
            tx.execute(
                "INSERT INTO chat_attachments (id, message_id, filename, mime_type, size, content, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &attachment.id,
                    &message.id,
                    &attachment.filename,
                    &attachment.mime_type,
                    &attachment.size,
                    &attachment.content,
                    &message.timestamp,
                ],
            )?;
        }
    }
    Ok(())
}

impl StorageError {
    /// Whether the database refused the operation (a conflict, a constraint) rather than
    /// failing to answer: the same work split up may partly succeed.
    fn is_refusal(&self) -> bool {
        match self {
            StorageError::Conflict(_) | StorageError::Busy | StorageError::Stale(_) | StorageError::Limited { .. } => {
                true
            }
            StorageError::Postgres(err) => err.as_db_error().is_some(),
            _ => false,
        }
    }

    /// Whether trying the same transaction again may succeed (it lost a deadlock or a
    /// serialization check; nothing of it was applied).
    fn is_transient(&self) -> bool {
        match self {
            StorageError::Postgres(err) => {
                err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                    || err.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            }
            _ => false,
        }
    }
}

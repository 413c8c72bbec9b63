//! The storage actor: the only door to persistence. It runs on a `SyncArbiter` (blocking is fine
//! there) and delegates every message to a [`ChatStore`] backend. SQLite is the embedded default;
//! a PostgreSQL backend is a second implementation of the same trait, not a rewrite.
//!
//! Callers hold a [`Storage`] handle and `ask` it typed messages, each with a timeout.

mod error;
mod postgres;
mod sqlite;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::approval::{ApprovalRecord, Grant};
use crate::ids::{SessionId, StreamId, UserId};
use crate::model::{ChatMessage, Session, TitleSource};

pub use error::StorageError;
pub use postgres::{PostgresOptions, PostgresStore, PostgresUrl};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};
pub use writer::{TurnWriter, WriteTurn};

/// A page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows at most.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u64,
}

/// The state of a stream's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// The turn is (or was, before a crash) producing events.
    Running,
    /// Ended with `done`.
    Done,
    /// Ended with `error`.
    Failed,
    /// The server stopped while the turn ran.
    Interrupted,
    /// The person cancelled the turn.
    Cancelled,
}

impl StreamStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Running => "running",
            StreamStatus::Done => "done",
            StreamStatus::Failed => "failed",
            StreamStatus::Interrupted => "interrupted",
            StreamStatus::Cancelled => "cancelled",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "running" => StreamStatus::Running,
            "done" => StreamStatus::Done,
            "failed" => StreamStatus::Failed,
            "cancelled" => StreamStatus::Cancelled,
            _ => StreamStatus::Interrupted,
        }
    }
}

/// A stream as stored: who may read it and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its id.
    pub id: StreamId,
    /// Its owner.
    pub user_id: UserId,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Where it stands.
    pub status: StreamStatus,
    /// When the turn started.
    pub created_at: DateTime<Utc>,
}

/// One event of a stream's log: its sequence number (from 1) and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the stream, from 1; the SSE `id:`.
    pub seq: u64,
    /// The `StreamMessage` JSON.
    pub data: String,
}

/// Everything one step of a turn persists, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct TurnWrite {
    /// A stream to create first (the turn's first write).
    pub new_stream: Option<StreamRecord>,
    /// Messages to append to the session, in order.
    pub messages: Vec<ChatMessage>,
    /// The session the messages belong to.
    pub session_id: Option<SessionId>,
    /// The stream the events and status belong to.
    pub stream_id: Option<StreamId>,
    /// Events to append to the stream's log.
    pub events: Vec<StoredEvent>,
    /// A final status for the stream.
    pub finish: Option<StreamStatus>,
    /// An approval request to create.
    pub new_approval: Option<ApprovalRecord>,
    /// A pending approval to settle (its calls, status and decider are replaced). The write fails
    /// with `Conflict` if it is no longer pending.
    pub settle_approval: Option<ApprovalRecord>,
    /// "Always allow" grants to add.
    pub new_grants: Vec<NewGrant>,
    /// A decided approval whose calls' outcomes changed: its calls are replaced.
    pub call_outcomes: Option<ApprovalRecord>,
    /// The session lease this write holds or takes, on a store several nodes share (ignored by
    /// a single-node store): a write whose token is no longer the lease's changes nothing.
    pub fence: Option<Fence>,
}

/// A turn's hold on its session, on a store several nodes share. Each turn takes the session's
/// lease with its first write (the token goes up by one), every later write of the turn carries
/// the token, and its last write (the one with `finish`) gives the lease back. A node whose lease
/// was taken over (it was presumed dead) can no longer write: its token is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The session.
    pub session_id: SessionId,
    /// The lease's token this write holds, or with `claim`, the one it takes.
    pub token: u64,
    /// Take the lease: `Busy` when another turn holds it, `Stale` when `token` is not the next
    /// one (another node ran a turn since this node read the session: its copy is stale).
    pub claim: bool,
    /// With `claim`: count the turn against the user's limits on every node (a person's message;
    /// not the continuation after a decision). `Limited` when they are used up.
    pub admit: bool,
}

/// A turn a process left running that this node now ends: its stream, the events it stored, and
/// the lease claimed for the writes that end it (none on a single-node store).
pub type OrphanTurn = (StreamRecord, Vec<StoredEvent>, Option<Fence>);

/// What another node said through the database (PostgreSQL `NOTIFY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A stream's events up to `seq` are committed; `at_micros`: when (Unix µs, the writer's clock).
    Events {
        /// The stream.
        stream_id: StreamId,
        /// Its last committed event.
        seq: u64,
        /// When the write was made.
        at_micros: i64,
    },
    /// Someone asked to cancel this stream's turn.
    Cancel {
        /// The stream.
        stream_id: StreamId,
    },
    /// Someone answered a question this stream's turn asked during a call (the answer is stored
    /// in the elicitation).
    Answer {
        /// The stream.
        stream_id: StreamId,
        /// The elicitation.
        request_id: String,
    },
    /// The listening connection was lost and is back: notices may have been missed.
    Reconnected,
}

/// A grant to store: the user, the session for session-scoped grants, and the tool.
pub type NewGrant = (UserId, Option<SessionId>, String);

/// Something an operator registered through the admin API (a provider): its settings as JSON,
/// which the shell reads and checks; storage keeps them as they are. Never a secret: keys are
/// named by environment variable.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminRecord {
    /// What it is (`provider`).
    pub kind: String,
    /// Unique within its kind.
    pub name: String,
    /// Its settings, a JSON object.
    pub spec: String,
    /// Who made the last change.
    pub updated_by: String,
    /// When.
    pub updated_at: DateTime<Utc>,
}

/// A persistence backend. Every method is blocking and runs on the storage actor's threads.
/// Methods that take a `UserId` only see rows of that user: isolation holds at this layer too.
pub trait ChatStore: Send + Sync + 'static {
    /// Inserts a new session.
    fn create_session(&self, session: &Session) -> Result<(), StorageError>;
    /// A session of this user, if it exists.
    fn get_session(&self, user: UserId, id: &SessionId) -> Result<Option<Session>, StorageError>;
    /// A page of the user's sessions, newest activity first, and the total count.
    fn list_sessions(&self, user: UserId, page: Page) -> Result<(Vec<Session>, u64), StorageError>;
    /// Sets the title. A `Generated` title only replaces a `Default` one. Returns whether a
    /// session of this user was changed.
    fn set_title(&self, user: UserId, id: &SessionId, title: &str, source: TitleSource) -> Result<bool, StorageError>;
    /// Deletes a session with its messages and streams. Returns whether it existed.
    fn delete_session(&self, user: UserId, id: &SessionId) -> Result<bool, StorageError>;
    /// A page of a session's messages in order, or `None` if the session is not the user's.
    fn list_messages(
        &self,
        user: UserId,
        id: &SessionId,
        page: Option<Page>,
    ) -> Result<Option<Vec<ChatMessage>>, StorageError>;
    /// Deletes all messages of a session. Returns whether the session is the user's.
    fn clear_messages(&self, user: UserId, id: &SessionId) -> Result<bool, StorageError>;
    /// Applies one step of a turn atomically.
    fn write_turn(&self, write: &TurnWrite) -> Result<(), StorageError>;
    /// Applies several turn writes in one transaction, each one applied entirely or not at all;
    /// a result per write, in order. (The default applies them one by one.)
    fn write_turns(&self, writes: &[TurnWrite]) -> Vec<Result<(), StorageError>> {
        writes.iter().map(|write| self.write_turn(write)).collect()
    }
    /// A stream of this user with its events after `after_seq`, if it exists.
    fn load_stream(
        &self,
        user: UserId,
        id: &StreamId,
        after_seq: u64,
    ) -> Result<Option<(StreamRecord, Vec<StoredEvent>)>, StorageError>;
    /// An approval request of this user.
    fn get_approval(&self, user: UserId, request_id: &str) -> Result<Option<ApprovalRecord>, StorageError>;
    /// The session's latest pending approval request (maybe expired by now).
    fn pending_approval(&self, user: UserId, session: &SessionId) -> Result<Option<ApprovalRecord>, StorageError>;
    /// The user's approval requests with this stored status (all when `None`), newest first.
    fn list_approvals(&self, user: UserId, status: Option<&str>) -> Result<Vec<ApprovalRecord>, StorageError>;
    /// The user's grants.
    fn list_grants(&self, user: UserId) -> Result<Vec<Grant>, StorageError>;
    /// Revokes a grant; `false` if not the user's.
    fn delete_grant(&self, user: UserId, id: &str) -> Result<bool, StorageError>;
    /// Approval requests with a call still marked `running` (a previous process stopped while it ran).
    fn approvals_with_running_calls(&self) -> Result<Vec<ApprovalRecord>, StorageError>;
    /// Every stream left `running` (by a previous process), with its stored events.
    fn running_streams(&self) -> Result<Vec<(StreamRecord, Vec<StoredEvent>)>, StorageError>;
    /// A cheap liveness probe.
    fn ping(&self) -> Result<(), StorageError>;
    /// The admin records of this kind, by name.
    fn list_admin_records(&self, kind: &str) -> Result<Vec<AdminRecord>, StorageError>;
    /// Stores a record: `create` inserts it (`false` if the name is taken), otherwise it
    /// replaces the one of that name (`false` if there is none).
    fn put_admin_record(&self, record: &AdminRecord, create: bool) -> Result<bool, StorageError>;
    /// Deletes a record; `false` if there was none.
    fn delete_admin_record(&self, kind: &str, name: &str) -> Result<bool, StorageError>;

    /// Whether several nodes may share this store (then turns carry a [`Fence`]).
    fn is_shared(&self) -> bool {
        false
    }
    /// The session's lease token (0 when it never had one): a session actor reads it with the
    /// history, and its next turn claims the token after it.
    fn lease_token(&self, _session: &SessionId) -> Result<u64, StorageError> {
        Ok(0)
    }
    /// Turns left running by a process that is gone, each claimed for this node to end. On one
    /// node (`at_start`): every running stream. On a shared store: the streams whose lease has
    /// lapsed, and at start-up those of this node's id (a restart of the same node).
    fn claim_orphaned_turns(&self, _at_start: bool) -> Result<Vec<OrphanTurn>, StorageError> {
        Ok(self.running_streams()?.into_iter().map(|(r, e)| (r, e, None)).collect())
    }
    /// Extends this node's leases of the turns in `running` (the rest lapse); returns those of
    /// them someone asked to cancel.
    fn renew_leases(&self, _running: &[StreamId]) -> Result<Vec<StreamId>, StorageError> {
        Ok(Vec::new())
    }
    /// Stores the answer to a question asked during a call (the elicitation settled with it)
    /// while its stream runs, and on a shared store tells the node that runs it (`NOTIFY`);
    /// `false` when the question is no longer pending or its stream has ended.
    fn store_answer(&self, answered: &ApprovalRecord) -> Result<bool, StorageError>;
    /// Asks the node that runs this stream's turn to cancel it; `false` when the stream is not
    /// the user's or not running.
    fn request_cancel(&self, _user: UserId, _id: &StreamId) -> Result<bool, StorageError> {
        Ok(false)
    }
}

macro_rules! storage_messages {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($field:ident : $ty:ty),* $(,)? } -> $ret:ty =
            |$store:ident, $msg:ident| $body:expr;
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name { $(#[doc = stringify!($field)] pub $field: $ty),* }

        impl Message for $name {
            type Result = Result<$ret, StorageError>;
        }

        impl Handler<$name> for StorageActor {
            type Result = Result<$ret, StorageError>;

            fn handle(&mut self, $msg: $name, _: &mut SyncContext<Self>) -> Self::Result {
                let $store = &*self.store;
                $body
            }
        }
    )*};
}

storage_messages! {
    /// Creates a session.
    CreateSession { session: Session } -> () = |s, m| s.create_session(&m.session);
    /// Reads one of the user's sessions.
    GetSession { user: UserId, id: SessionId } -> Option<Session> = |s, m| s.get_session(m.user, &m.id);
    /// Lists the user's sessions.
    ListSessions { user: UserId, page: Page } -> (Vec<Session>, u64) = |s, m| s.list_sessions(m.user, m.page);
    /// Renames a session (see [`ChatStore::set_title`]).
    SetTitle { user: UserId, id: SessionId, title: String, source: TitleSource } -> bool =
        |s, m| s.set_title(m.user, &m.id, &m.title, m.source);
    /// Deletes a session.
    DeleteSession { user: UserId, id: SessionId } -> bool = |s, m| s.delete_session(m.user, &m.id);
    /// Lists a session's messages (all of them when `page` is `None`).
    ListMessages { user: UserId, id: SessionId, page: Option<Page> } -> Option<Vec<ChatMessage>> =
        |s, m| s.list_messages(m.user, &m.id, m.page);
    /// Clears a session's messages.
    ClearMessages { user: UserId, id: SessionId } -> bool = |s, m| s.clear_messages(m.user, &m.id);
    /// Reads a stream's log.
    LoadStream { user: UserId, id: StreamId, after_seq: u64 } -> Option<(StreamRecord, Vec<StoredEvent>)> =
        |s, m| s.load_stream(m.user, &m.id, m.after_seq);
    /// Reads an approval request by its id, or by its history row (`tool_approval_<uuid>`,
    /// `historical_<row id>`).
    GetApproval { user: UserId, request_id: String } -> Option<ApprovalRecord> = |s, m| s.get_approval(m.user, &m.request_id);
    /// Reads a session's pending approval request.
    PendingApproval { user: UserId, session: SessionId } -> Option<ApprovalRecord> = |s, m| s.pending_approval(m.user, &m.session);
    /// Lists approval requests.
    ListApprovals { user: UserId, status: Option<String> } -> Vec<ApprovalRecord> = |s, m| s.list_approvals(m.user, m.status.as_deref());
    /// Lists grants.
    ListGrants { user: UserId } -> Vec<Grant> = |s, m| s.list_grants(m.user);
    /// Revokes a grant.
    DeleteGrant { user: UserId, id: String } -> bool = |s, m| s.delete_grant(m.user, &m.id);
    /// Lists the admin records of a kind.
    ListAdminRecords { kind: String } -> Vec<AdminRecord> = |s, m| s.list_admin_records(&m.kind);
    /// Creates (`create`) or replaces an admin record.
    PutAdminRecord { record: AdminRecord, create: bool } -> bool = |s, m| s.put_admin_record(&m.record, m.create);
    /// Deletes an admin record.
    DeleteAdminRecord { kind: String, name: String } -> bool = |s, m| s.delete_admin_record(&m.kind, &m.name);
    /// Probes the database.
    Ping {} -> () = |s, _m| s.ping();
    /// Reads a session's lease token.
    LeaseToken { session_id: SessionId } -> u64 = |s, m| s.lease_token(&m.session_id);
    /// Renews this node's leases (see [`ChatStore::renew_leases`]).
    RenewLeases { running: Vec<StreamId> } -> Vec<StreamId> = |s, m| s.renew_leases(&m.running);
    /// Ends the turns of nodes whose lease lapsed, as crash recovery does; returns their streams.
    InterruptOrphans {} -> Vec<StreamId> = |s, _m| crate::session::recovery::interrupt_orphans(s, false);
    /// Flags a stream for cancel by whichever node runs it.
    RequestCancel { user: UserId, id: StreamId } -> bool = |s, m| s.request_cancel(m.user, &m.id);
    /// Stores the answer to a question asked during a call, for the node that runs the call.
    StoreAnswer { answered: ApprovalRecord } -> bool = |s, m| s.store_answer(&m.answered);
}

/// The storage actor: one instance per `SyncArbiter` thread, all sharing one backend.
pub struct StorageActor {
    store: Arc<dyn ChatStore>,
}

impl Actor for StorageActor {
    type Context = SyncContext<Self>;
}

/// The handle other actors and the HTTP shell use to reach storage.
#[derive(Clone)]
pub struct Storage {
    addr: Addr<StorageActor>,
    writer: Addr<TurnWriter>,
    timeout: Duration,
    shared: bool,
}

impl Storage {
    /// Starts `threads` storage actors on a `SyncArbiter` over the given backend, and the turn
    /// writer (group commit) on the current arbiter.
    pub fn start(store: Arc<dyn ChatStore>, threads: usize, timeout: Duration) -> Self {
        let shared = store.is_shared();
        let writer = TurnWriter::new(Arc::clone(&store)).start();
        let addr = SyncArbiter::start(threads.max(1), move || StorageActor {
            store: Arc::clone(&store),
        });
        Self {
            addr,
            writer,
            timeout,
            shared,
        }
    }

    /// Whether several nodes may share the store (turns then carry a lease [`Fence`]).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Stores one step of a turn; replies once it is committed (with the other writes queued at
    /// the same moment, in one transaction), at most the configured timeout.
    pub async fn write(&self, write: TurnWrite) -> Result<(), StorageError> {
        let _queued = crate::backlog::Queued::enter("storage");
        match self.writer.send(WriteTurn { write }).timeout(self.timeout).await {
            Ok(result) => result,
            Err(err) => Err(StorageError::Unavailable(err.to_string())),
        }
    }

    /// Sends a message and waits for its reply, at most the configured timeout.
    pub async fn ask<M, T>(&self, msg: M) -> Result<T, StorageError>
    where
        M: Message<Result = Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
        StorageActor: Handler<M>,
    {
        let _queued = crate::backlog::Queued::enter("storage");
        match self.addr.send(msg).timeout(self.timeout).await {
            Ok(result) => result,
            Err(err) => Err(StorageError::Unavailable(err.to_string())),
        }
    }
}

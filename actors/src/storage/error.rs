//! `StorageError`: what can go wrong below the storage actor's messages.

/// A failure of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database engine reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL reported an error (or the connection to it failed).
    #[error("database error: {0}")]
    Postgres(#[from] postgres::Error),
    /// No connection could be taken from the pool in time.
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    /// A stored JSON column could not be read or written.
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// The storage actor did not answer in time or is gone.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// The row changed under us (e.g. an approval already decided).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Another turn holds the session's lease (on this node or another).
    #[error("a turn is already running in this session")]
    Busy,
    /// The write's lease token is not the session's any more: another node took the session over
    /// (or ran a turn in it since this node read it).
    #[error("the session's lease moved on: {0}")]
    Stale(String),
    /// The user's turn allowance (counted across every node) is used up.
    #[error("{reason}")]
    Limited {
        /// Which limit.
        reason: &'static str,
        /// Seconds until a turn may start.
        retry_after: u64,
    },
    /// The schema migration at start-up failed.
    #[error("schema migration failed: {0}")]
    Migration(String),
    /// Another process has the database file open.
    #[error("the database {0} is in use by another aichat process")]
    InUse(String),
}

impl StorageError {
    /// The stable code a client sees for any storage failure.
    pub const CODE: &'static str = "storage_unavailable";
}

impl From<serde_json::Error> for StorageError {
    fn from(err: serde_json::Error) -> Self {
        StorageError::Corrupt(err.to_string())
    }
}

//! `SessionError`: why a chat operation was refused or failed before its stream started.

use crate::storage::StorageError;

/// A failure of a session-level operation.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session (or stream) does not exist or belongs to someone else.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The session already runs a turn; one turn at a time per session.
    #[error("a turn is already running in this session")]
    Busy,
    /// The stream's turn has already ended.
    #[error("the turn of this stream has already ended")]
    Finished,
    /// The server is shutting down and takes no new turns.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The approval request was already decided (or settled).
    #[error("the approval request was already decided")]
    AlreadyDecided,
    /// The approval request expired (it counts as denied).
    #[error("the approval request expired")]
    ApprovalExpired,
    /// The provider that would answer cannot read an attached file of this kind.
    #[error("the provider {provider} cannot read {filename} ({mime_type})")]
    AttachmentUnreadable {
        /// The provider.
        provider: String,
        /// The file.
        filename: String,
        /// Its type.
        mime_type: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An actor did not answer in time or is gone.
    #[error("the chat service is unavailable: {0}")]
    Unavailable(String),
}

impl From<actix::MailboxError> for SessionError {
    fn from(err: actix::MailboxError) -> Self {
        SessionError::Unavailable(err.to_string())
    }
}

//! `SessionError`: why a chat operation was refused, or how a turn's answer failed.

use crate::answer::TurnFailure;
use crate::storage::StorageError;

/// A failure of a chat operation.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session does not exist or belongs to someone else.
    #[error("session not found")]
    SessionNotFound,
    /// The stream does not exist or belongs to someone else.
    #[error("stream not found")]
    StreamNotFound,
    /// The approval request does not exist, belongs to someone else, or is of another session.
    #[error("approval request not found")]
    ApprovalNotFound,
    /// The grant does not exist or belongs to someone else.
    #[error("grant not found")]
    GrantNotFound,
    /// No turn of that stream runs in this session actor.
    #[error("no such turn is running")]
    TurnNotRunning,
    /// The session already runs a turn; one turn at a time per session.
    #[error("a turn is already running in this session")]
    Busy,
    /// The session actor's copy of the session is stale (another node ran a turn in it since it
    /// was read); a fresh actor reads it again. Never reaches a client.
    #[error("the session changed on another node")]
    Stale,
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
    /// The elicitation does not exist, belongs to someone else, or is of another session.
    #[error("elicitation not found")]
    ElicitationNotFound,
    /// The elicitation was already answered (or settled).
    #[error("the elicitation was already answered")]
    ElicitationAnswered,
    /// The elicitation expired (it counts as cancel).
    #[error("the elicitation expired")]
    ElicitationExpired,
    /// The question was asked during a call that does not run here: on a shared store, its turn
    /// may run on another node. Never reaches a client.
    #[error("the question's call runs on another node")]
    Elsewhere,
    /// The answer does not fit the question's schema.
    #[error("the answer does not fit the question: {0}")]
    AnswerInvalid(crate::elicitation::InvalidAnswer),
    /// An in-band approval decision came with files.
    #[error("an approval decision carries no files")]
    DecisionWithFiles,
    /// The request named a provider that is not configured.
    #[error("no provider named {0:?}")]
    UnknownProvider(String),
    /// The user's turn allowance is used up.
    #[error("{reason}")]
    TooManyTurns {
        /// Which limit.
        reason: &'static str,
        /// Seconds until a turn may start.
        retry_after: u64,
    },
    /// The user already reads as many streams at once as allowed.
    #[error("too many streams open at once (at most {limit} per user)")]
    TooManyStreams {
        /// The cap.
        limit: usize,
    },
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
    /// The turn ended with an `error` event (a non-streaming send reports it).
    #[error("{0}")]
    TurnFailed(TurnFailure),
    /// The whole answer of a non-streaming send took too long.
    #[error("the answer took too long")]
    AnswerTimeout,
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

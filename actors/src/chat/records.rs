//! What `Chat` reads and changes in storage on a person's behalf outside a turn: sessions,
//! their messages, approval requests and grants. Every call is scoped to the asking user; a
//! record of someone else's is "not found".

use std::time::Duration;

use super::Chat;
use crate::approval::{ApprovalRecord, ApprovalStatus, Grant};
use crate::ids::{SessionId, UserId};
use crate::model::{ChatMessage, Session, TitleSource};
use crate::session::SessionError;
use crate::storage::{
    CreateSession, DeleteGrant, GetSession, ListApprovals, ListGrants, ListMessages, ListSessions, Page, Ping, SetTitle,
};

/// The title of a session created without one.
const UNTITLED: &str = "New Chat Session";

impl Chat {
    /// Creates a session; a title given here is the person's and is never replaced.
    pub async fn create_session(&self, user: UserId, title: Option<String>) -> Result<Session, SessionError> {
        let session = match title {
            Some(title) => Session::new(user, title, TitleSource::User),
            None => Session::new(user, UNTITLED.into(), TitleSource::Default),
        };
        let create = CreateSession {
            session: session.clone(),
        };
        self.storage.ask(create).await?;
        Ok(session)
    }

    /// A page of the user's sessions, newest activity first, and how many there are.
    pub async fn sessions(&self, user: UserId, page: Page) -> Result<(Vec<Session>, u64), SessionError> {
        Ok(self.storage.ask(ListSessions { user, page }).await?)
    }

    /// One of the user's sessions.
    pub async fn session(&self, user: UserId, id: SessionId) -> Result<Session, SessionError> {
        self.storage
            .ask(GetSession { user, id })
            .await?
            .ok_or(SessionError::SessionNotFound)
    }

    /// Renames a session; a title set by the person is never replaced by a generated one.
    pub async fn rename(&self, user: UserId, id: SessionId, title: String) -> Result<(), SessionError> {
        let set = SetTitle {
            user,
            id,
            title,
            source: TitleSource::User,
        };
        if self.storage.ask(set).await? {
            Ok(())
        } else {
            Err(SessionError::SessionNotFound)
        }
    }

    /// A page of a session's messages, oldest first.
    pub async fn messages(&self, user: UserId, id: SessionId, page: Page) -> Result<Vec<ChatMessage>, SessionError> {
        let list = ListMessages {
            user,
            id,
            page: Some(page),
        };
        self.storage.ask(list).await?.ok_or(SessionError::SessionNotFound)
    }

    /// The user's tool questions that wait for an answer (paused turns; a question asked during
    /// a call is on its turn's stream), newest first.
    pub async fn pending_elicitations(&self, user: UserId) -> Result<Vec<ApprovalRecord>, SessionError> {
        let now = crate::model::now();
        let pending = self
            .storage
            .ask(ListApprovals {
                user,
                status: Some(ApprovalStatus::Pending.as_str().to_owned()),
            })
            .await?;
        Ok(pending
            .into_iter()
            .filter(|r| r.is_elicitation() && !r.is_live())
            .filter(|r| r.effective_status(now) == ApprovalStatus::Pending)
            .collect())
    }

    /// The user's approval requests, newest first; with `status`, only those in it now (a
    /// pending request past its expiry counts as expired).
    pub async fn approvals(
        &self,
        user: UserId,
        status: Option<ApprovalStatus>,
    ) -> Result<Vec<ApprovalRecord>, SessionError> {
        let now = crate::model::now();
        let all = self.storage.ask(ListApprovals { user, status: None }).await?;
        // Elicitations are kept beside the approvals; they are not approvals.
        Ok(all
            .into_iter()
            .filter(|r| !r.is_elicitation())
            .filter(|r| status.is_none_or(|s| r.effective_status(now) == s))
            .collect())
    }

    /// The user's "always allow" grants.
    pub async fn grants(&self, user: UserId) -> Result<Vec<Grant>, SessionError> {
        Ok(self.storage.ask(ListGrants { user }).await?)
    }

    /// Revokes one of the user's grants.
    pub async fn revoke_grant(&self, user: UserId, id: String) -> Result<(), SessionError> {
        if self.storage.ask(DeleteGrant { user, id }).await? {
            Ok(())
        } else {
            Err(SessionError::GrantNotFound)
        }
    }

    /// Whether storage answers within `limit`.
    pub async fn storage_ok(&self, limit: Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.storage.ask(Ping {})).await, Ok(Ok(())))
    }
}

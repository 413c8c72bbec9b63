//! Cancel on disconnect: a turn whose last reader went away is cancelled unless a reader comes
//! back within a grace period (`server.cancel_on_disconnect_secs`; zero keeps the turn running,
//! ready for resume).

use std::sync::Arc;
use std::time::Duration;

use super::Chat;
use crate::ids::UserId;
use crate::stream::StreamBuffer;

/// Held by a reader of a stream for as long as it reads; its drop starts the grace period.
pub struct DisconnectGuard {
    chat: Chat,
    user: UserId,
    buffer: Arc<StreamBuffer>,
    grace: Duration,
}

impl Chat {
    /// A guard for one reader of `buffer`: when it drops and no reader comes back within `grace`,
    /// the turn is cancelled as if its owner had asked.
    pub fn watch_disconnect(&self, user: UserId, buffer: &Arc<StreamBuffer>, grace: Duration) -> DisconnectGuard {
        DisconnectGuard {
            chat: self.clone(),
            user,
            buffer: Arc::clone(buffer),
            grace,
        }
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.grace.is_zero() || self.buffer.is_finished() {
            return;
        }
        let (chat, user, buffer, grace) = (self.chat.clone(), self.user, Arc::clone(&self.buffer), self.grace);
        actix_rt::spawn(async move {
            tokio::time::sleep(grace).await;
            // The guard's own subscription is gone by now: zero readers means nobody came back.
            if buffer.readers() == 0 && !buffer.is_finished() {
                tracing::info!(stream_id = %buffer.id(), "no reader came back: cancelling the turn");
                let _ = chat.cancel(user, buffer.id()).await;
            }
        });
    }
}

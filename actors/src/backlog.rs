//! Mailbox backlog: the messages sent to each kind of actor and not answered yet (waiting in a
//! mailbox or being handled), as the gauge `aichat_mailbox_backlog{actor}`. A backlog that keeps
//! growing names the actor that cannot keep up.

/// Counts one message from send to reply; hold it across the `send(..).await` (or inside the
/// message, for `do_send`).
#[derive(Debug)]
pub struct Queued(&'static str);

impl Queued {
    /// One more message for `actor` (`storage`, `registry`, `session`, `provider`).
    pub fn enter(actor: &'static str) -> Self {
        metrics::gauge!("aichat_mailbox_backlog", "actor" => actor).increment(1.0);
        Self(actor)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        metrics::gauge!("aichat_mailbox_backlog", "actor" => self.0).decrement(1.0);
    }
}

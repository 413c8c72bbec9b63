//! `TurnWriter`: group commit for the writes of turns. Each `WriteTurn` joins a queue; one batch
//! at a time is committed in one transaction on the blocking pool (each write in its own
//! savepoint, so one that fails fails alone), and every write is answered only once its batch is
//! committed: nothing a turn announces is less durable than before. The writes that arrive while a
//! batch commits form the next batch, so batches grow with the load and a lone write waits for
//! nothing.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{ChatStore, StorageError, TurnWrite};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// Stores one step of a turn (see [`TurnWrite`]); answered once committed.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct WriteTurn {
    /// What to store.
    pub write: TurnWrite,
}

type Reply = oneshot::Sender<Result<(), StorageError>>;

/// The group-commit writer.
pub struct TurnWriter {
    store: Arc<dyn ChatStore>,
    queued: Vec<(TurnWrite, Reply)>,
    committing: bool,
}

impl TurnWriter {
    /// A writer over `store`.
    pub fn new(store: Arc<dyn ChatStore>) -> Self {
        Self {
            store,
            queued: Vec::new(),
            committing: false,
        }
    }

    /// Commits what is queued (up to `MAX_BATCH`), then the next batch, until none is left.
    fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.queued.is_empty() {
            return;
        }
        self.committing = true;
        let take = self.queued.len().min(MAX_BATCH);
        let (writes, replies): (Vec<TurnWrite>, Vec<Reply>) = self.queued.drain(..take).unzip();
        metrics::histogram!("aichat_storage_batch_writes").record(writes.len() as f64);
        let store = Arc::clone(&self.store);
        let work = actix_rt::task::spawn_blocking(move || store.write_turns(&writes));
        ctx.spawn(work.into_actor(self).map(move |results, act, ctx| {
            match results {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(_) => {
                    tracing::error!("a storage batch panicked");
                    for reply in replies {
                        let _ = reply.send(Err(StorageError::Unavailable("the storage batch failed".into())));
                    }
                }
            }
            act.committing = false;
            act.commit(ctx);
        }));
    }
}

impl Actor for TurnWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every turn of every session writes through here.
        ctx.set_mailbox_capacity(16_384);
    }
}

impl Handler<WriteTurn> for TurnWriter {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: WriteTurn, ctx: &mut Self::Context) -> Self::Result {
        let (reply, committed) = oneshot::channel();
        self.queued.push((msg.write, reply));
        self.commit(ctx);
        Box::pin(async move {
            committed
                .await
                .unwrap_or_else(|_| Err(StorageError::Unavailable("the turn writer stopped".into())))
        })
    }
}

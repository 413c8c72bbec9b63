//! The cluster actor: this node's part in sharing a database with other nodes (PostgreSQL only).
//! Every third of a lease it renews the leases of the turns running here (a slow node is not
//! robbed), stops those someone asked to cancel on another node, and ends the turns of nodes
//! whose leases lapsed (a dead node's) exactly as crash recovery does. [`on_notice`] turns the
//! database's notices into wake-ups of followed streams and cancels of turns running here.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::registry::{AnsweredHere, CancelHere, SessionRegistry};
use crate::storage::{InterruptOrphans, Notice, RenewLeases, Storage};
use crate::stream::StreamHub;

/// The cluster actor.
pub struct ClusterActor {
    storage: Storage,
    hub: Arc<StreamHub>,
    registry: Addr<SessionRegistry>,
    lease: Duration,
    /// A sweep is in flight (the next tick skips rather than piles up).
    busy: bool,
}

impl ClusterActor {
    /// A cluster actor renewing leases of `lease` length.
    pub fn new(storage: Storage, hub: Arc<StreamHub>, registry: Addr<SessionRegistry>, lease: Duration) -> Self {
        Self {
            storage,
            hub,
            registry,
            lease,
            busy: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let (storage, hub, registry) = (self.storage.clone(), Arc::clone(&self.hub), self.registry.clone());
        let work = async move {
            match storage
                .ask(RenewLeases {
                    running: hub.running_here(),
                })
                .await
            {
                Ok(cancel) => {
                    for stream_id in cancel {
                        cancel_here(&hub, &registry, &stream_id);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "could not renew this node's leases"),
            }
            match storage.ask(InterruptOrphans {}).await {
                Ok(ended) if !ended.is_empty() => {
                    tracing::warn!(turns = ended.len(), "ended the turns of a node whose leases lapsed");
                    for stream_id in &ended {
                        hub.announce(stream_id, 0);
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "could not look for lapsed leases"),
            }
        };
        ctx.spawn(work.into_actor(self).map(|(), act, _| act.busy = false));
    }
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = (self.lease / 3).max(Duration::from_millis(200));
        ctx.run_interval(every, Self::tick);
    }
}

impl Supervised for ClusterActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.busy = false;
    }
}

/// Stops the turn of `stream_id` if it runs on this node.
fn cancel_here(hub: &StreamHub, registry: &Addr<SessionRegistry>, stream_id: &crate::ids::StreamId) {
    if let Some(buffer) = hub.get(stream_id)
        && !buffer.is_followed()
        && !buffer.is_finished()
    {
        registry.do_send(CancelHere {
            session_id: buffer.session_id().clone(),
            stream_id: stream_id.clone(),
        });
    }
}

/// Hands the turn of `stream_id`, if it runs on this node, the answer another node stored.
fn answered_here(
    hub: &StreamHub,
    registry: &Addr<SessionRegistry>,
    stream_id: &crate::ids::StreamId,
    request_id: String,
) {
    if let Some(buffer) = hub.get(stream_id)
        && !buffer.is_followed()
        && !buffer.is_finished()
    {
        registry.do_send(AnsweredHere {
            session_id: buffer.session_id().clone(),
            request_id,
        });
    }
}

/// What to do with each notice from the database: wake the followers of a stream that got events,
/// stop a turn running here that someone cancelled elsewhere, wake every follower after a
/// reconnect (notices may have been missed). Runs on the listener's thread.
pub fn on_notice(hub: Arc<StreamHub>, registry: Addr<SessionRegistry>) -> impl Fn(Notice) + Send + 'static {
    move |notice| match notice {
        Notice::Events {
            stream_id, at_micros, ..
        } => hub.announce(&stream_id, at_micros),
        Notice::Cancel { stream_id } => cancel_here(&hub, &registry, &stream_id),
        Notice::Answer { stream_id, request_id } => answered_here(&hub, &registry, &stream_id, request_id),
        Notice::Reconnected => hub.announce_all(),
    }
}

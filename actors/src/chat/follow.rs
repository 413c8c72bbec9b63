//! Following a turn that runs on another node (a shared database): the buffer is filled from
//! storage each time that node announces events, or on a slow poll in case an announcement was
//! lost, until the stream ends; a turn that stopped without its terminal event (its node died and
//! another ended it) ends as a stream rebuilt from storage does. A follower nobody reads any more
//! stops and leaves the hub (the next reader starts another).

use std::sync::Arc;
use std::time::Duration;

use crate::ids::UserId;
use crate::storage::{LoadStream, Storage, StreamStatus};
use crate::stream::{StreamBuffer, StreamHub};

/// Longest wait for an announcement before the follower looks in storage anyway.
const POLL: Duration = Duration::from_secs(2);

/// Polls without a reader after which a follower stops.
const IDLE_POLLS: u32 = 3;

/// Fills `buffer` from storage until its stream ends or nobody reads it.
pub(super) async fn follow(storage: Storage, hub: Arc<StreamHub>, buffer: Arc<StreamBuffer>, user: UserId) {
    let mut idle = 0;
    loop {
        buffer.announced(POLL).await;
        let load = LoadStream {
            user,
            id: buffer.id().clone(),
            after_seq: buffer.last_seq(),
        };
        match storage.ask(load).await {
            Ok(Some((record, events))) => {
                if buffer.append_stored(events) > 0 {
                    record_lag(buffer.announced_at_micros());
                }
                if !buffer.is_finished() && record.status != StreamStatus::Running {
                    buffer.end_interrupted();
                }
            }
            // Deleted with its session.
            Ok(None) => buffer.end_interrupted(),
            Err(err) => {
                tracing::debug!(stream_id = %buffer.id(), error = %err, "following a stream: storage did not answer")
            }
        }
        if buffer.is_finished() {
            return;
        }
        idle = if buffer.readers() == 0 { idle + 1 } else { 0 };
        if idle >= IDLE_POLLS {
            hub.remove(buffer.id());
            return;
        }
    }
}

/// The time from the running node's announcement to the events being here for readers.
fn record_lag(announced_at_micros: i64) {
    if announced_at_micros <= 0 {
        return;
    }
    let lag = chrono::Utc::now().timestamp_micros() - announced_at_micros;
    metrics::histogram!("aichat_remote_reader_lag_seconds").record(lag.max(0) as f64 / 1e6);
}

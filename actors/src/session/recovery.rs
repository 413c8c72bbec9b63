//! Interrupted turns, in one place: what is kept of a turn that did not finish (the text the
//! person already saw, marked with why it stopped) and how its stream ends (an `error` event whose
//! code is `interrupted`). The stopped turn, the stream rebuilt from storage, and the start-up
//! sweep of turns a previous process left running all apply these rules.

use crate::ids::SessionId;
use crate::model::{ChatMessage, Role, StreamMessage, StreamMessageType};
use crate::storage::{ChatStore, StorageError, StoredEvent, StreamStatus, TurnWrite};

/// More events than a turn ever pushes to readers before storing them (it stores every 64, and
/// before anything it announces). A stream that lost its terminal event in a crash gets one
/// numbered this far above its last stored event: above every id a client can have seen, so no
/// id is reused for other content and a resume after any id it saw ends with this event.
pub const UNSEEN_GAP: u64 = 128;

/// The sequence number of the terminal event of a stream whose last stored event is `last`.
pub fn terminal_seq(last: u64) -> u64 {
    last + UNSEEN_GAP
}

/// The terminal event of a turn the server stopped before it was complete.
pub fn interrupted_note(session: &SessionId) -> StreamMessage {
    StreamMessage::error(
        session,
        StreamStatus::Interrupted.as_str(),
        "The server stopped before this answer was complete; the text streamed just before it \
         stopped may be missing from the stored answer.",
    )
}

/// The partial answer a stopped turn keeps: the text the person already saw, marked with why it
/// stopped (`cancelled`, `interrupted`). Nothing when no text was streamed.
pub fn partial_answer(text: String, status: StreamStatus) -> Option<ChatMessage> {
    if text.is_empty() {
        return None;
    }
    let mut answer = ChatMessage::new(Role::Assistant, text);
    answer.status = Some(status.as_str().to_owned());
    Some(answer)
}

/// What storing an interrupted turn writes, from the events it stored before it stopped: the
/// text of its last round (after its last tool round; earlier rounds are stored already) as a
/// partial answer, and the terminal event when the stream has none.
pub fn interrupted_write(session: &SessionId, stream: &crate::ids::StreamId, events: &[StoredEvent]) -> TurnWrite {
    let messages: Vec<StreamMessage> = events
        .iter()
        .filter_map(|e| serde_json::from_str(&e.data).ok())
        .collect();
    let start = messages
        .iter()
        .rposition(|m| m.kind == StreamMessageType::ToolExecution)
        .map_or(0, |i| i + 1);
    let text: String = messages[start..]
        .iter()
        .filter(|m| m.kind == StreamMessageType::Message)
        .filter_map(|m| m.content.as_deref())
        .collect();
    let ended = messages.last().is_some_and(StreamMessage::is_terminal);
    let terminal = (!ended).then(|| StoredEvent {
        seq: terminal_seq(events.last().map_or(0, |e| e.seq)),
        data: serde_json::to_string(&interrupted_note(session)).unwrap_or_default(),
    });
    TurnWrite {
        messages: partial_answer(text, StreamStatus::Interrupted).into_iter().collect(),
        session_id: Some(session.clone()),
        stream_id: Some(stream.clone()),
        events: terminal.into_iter().collect(),
        finish: Some(StreamStatus::Interrupted),
        ..TurnWrite::default()
    }
}

/// At start-up: ends every turn a previous process left running (one transaction each), as
/// [`interrupted_write`] says. Returns how many.
pub fn interrupt_running(store: &dyn ChatStore) -> Result<u64, StorageError> {
    let running = store.running_streams()?;
    for (record, events) in &running {
        store.write_turn(&interrupted_write(&record.session_id, &record.id, events))?;
    }
    Ok(u64::try_from(running.len()).unwrap_or(u64::MAX))
}

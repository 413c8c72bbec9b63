//! Interrupted turns, in one place: what is kept of a turn that did not finish (the text the
//! person already saw, marked with why it stopped) and how its stream ends (an `error` event whose
//! code is `interrupted`). The stopped turn, the stream rebuilt from storage, and the start-up
//! sweep of turns a previous process left running all apply these rules.

use crate::approval::{ApprovalRecord, ApprovalStatus, BatchCall, CallOutcome, CallState, denied, outcome_unknown};
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
/// results of tool calls it left without one (`results`), or else the text of its last round
/// (after its last tool round; earlier rounds are stored already) as a partial answer; and the
/// terminal event when the stream has none.
pub fn interrupted_write(
    session: &SessionId,
    stream: &crate::ids::StreamId,
    events: &[StoredEvent],
    results: Vec<ChatMessage>,
) -> TurnWrite {
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
    // Calls were running: the round's text is stored with its `tool_calls` message already.
    let messages = if results.is_empty() {
        partial_answer(text, StreamStatus::Interrupted).into_iter().collect()
    } else {
        results
    };
    TurnWrite {
        messages,
        session_id: Some(session.clone()),
        stream_id: Some(stream.clone()),
        events: terminal.into_iter().collect(),
        finish: Some(StreamStatus::Interrupted),
        ..TurnWrite::default()
    }
}

/// Results for the calls of the session's last `tool_calls` message that have none: a call the
/// person denied gets its denial; one that was approved or allowed was sent, so its outcome is
/// unknown (it is never run again). Calls still waiting for a decision are left to it.
pub fn unanswered_results(history: &[ChatMessage], approvals: &[ApprovalRecord]) -> Vec<ChatMessage> {
    let Some(at) = history
        .iter()
        .rposition(|m| m.role == Role::Assistant && !m.tool_calls.is_empty())
    else {
        return Vec::new();
    };
    let answered: Vec<&str> = history[at + 1..]
        .iter()
        .filter(|m| m.role == Role::Tool)
        .filter_map(|m| m.tool_call_id.as_deref())
        .collect();
    history[at]
        .tool_calls
        .iter()
        .filter(|call| !answered.contains(&call.id.as_str()))
        .filter_map(|call| {
            // A question asked during a call lapsed with it: it says nothing of the outcome.
            let asked = approvals.iter().filter(|r| !r.is_live()).find_map(|r| {
                let batch_call = r.calls.iter().find(|c| c.call.id == call.id)?;
                Some((r.status, batch_call))
            });
            let execution = match asked {
                Some((ApprovalStatus::Pending, _)) => return None,
                // It finished while a sibling call waited on the person.
                Some((
                    _,
                    BatchCall {
                        result: Some(result), ..
                    },
                )) => result.clone(),
                Some((
                    _,
                    BatchCall {
                        state: CallState::Denied { by },
                        ..
                    },
                )) => denied(call, by),
                _ => outcome_unknown(call, "the server stopped"),
            };
            let for_model = execution.result.clone();
            Some(ChatMessage::tool_result(execution, for_model))
        })
        .collect()
}

/// At start-up: ends every turn a previous process left running (one transaction each): the
/// calls it was running get an unknown outcome (in their approval and in history), then the rest
/// as [`interrupted_write`] says. Returns how many turns.
pub fn interrupt_running(store: &dyn ChatStore) -> Result<u64, StorageError> {
    let ended = interrupt_orphans(store, true)?;
    Ok(u64::try_from(ended.len()).unwrap_or(u64::MAX))
}

/// Ends the turns [`ChatStore::claim_orphaned_turns`] hands this node (a previous process's at
/// start-up; on a shared store, also those of nodes whose lease lapsed), as [`interrupt_running`]
/// says, each write under the lease claimed for it. Returns their streams.
pub fn interrupt_orphans(store: &dyn ChatStore, at_start: bool) -> Result<Vec<crate::ids::StreamId>, StorageError> {
    let orphans = store.claim_orphaned_turns(at_start)?;
    if orphans.is_empty() && store.is_shared() {
        return Ok(Vec::new());
    }
    for mut record in store.approvals_with_running_calls()? {
        let claimed = orphans
            .iter()
            .find(|(stream, _, _)| stream.session_id == record.session_id);
        let fence = match claimed {
            Some((_, _, fence)) => fence.clone(),
            // On a shared store, only the calls of turns claimed here: the others run on live nodes.
            None if store.is_shared() => continue,
            None => None,
        };
        record.finish_running(|_| CallOutcome::Unknown);
        let write = TurnWrite {
            call_outcomes: Some(record),
            fence,
            ..TurnWrite::default()
        };
        match store.write_turn(&write) {
            // Another node ended that turn first.
            Ok(()) | Err(StorageError::Stale(_)) => {}
            Err(err) => return Err(err),
        }
    }
    let mut ended = Vec::with_capacity(orphans.len());
    for (record, events, fence) in orphans {
        let (user, session) = (record.user_id, &record.session_id);
        let history = store.list_messages(user, session, None)?.unwrap_or_default();
        let approvals: Vec<ApprovalRecord> = store
            .list_approvals(user, None)?
            .into_iter()
            .filter(|a| a.session_id == *session)
            .collect();
        let results = unanswered_results(&history, &approvals);
        let mut write = interrupted_write(session, &record.id, &events, results);
        write.fence = fence;
        match store.write_turn(&write) {
            Ok(()) => ended.push(record.id),
            // Another node ended it first.
            Err(StorageError::Stale(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(ended)
}

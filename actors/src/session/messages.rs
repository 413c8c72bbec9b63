//! The session actor's messages: what the registry and `Chat` may ask of one session.

use std::sync::Arc;

use actix::prelude::*;

use super::{SessionActor, SessionError, StopReason};
use crate::approval::Decision;
use crate::elicitation::ElicitAnswer;
use crate::ids::{SessionId, StreamId};
use crate::stream::StreamBuffer;

/// Starts a turn with the person's message. Replies once the message is stored and the turn runs.
#[derive(Message, Clone)]
#[rtype(result = "Result<TurnStarted, SessionError>")]
pub struct StartTurn {
    /// The person's message.
    pub text: String,
    /// Files sent with it.
    pub attachments: Vec<crate::attachment::Attachment>,
    /// A provider the request named (else the default).
    pub provider: Option<String>,
}

/// A turn that is running: where to read it.
#[derive(Clone)]
pub struct TurnStarted {
    /// The session (the real id, whatever the client sent).
    pub session_id: SessionId,
    /// The stream id.
    pub stream_id: StreamId,
    /// The stream's buffer.
    pub stream: Arc<StreamBuffer>,
}

/// Decides the session's pending approval request, or answers its pending elicitation, and
/// starts the continuation turn: approved calls run (or an asking call is sent again with the
/// answers), denied ones get a denial result, then the model continues.
#[derive(Message)]
#[rtype(result = "Result<TurnStarted, SessionError>")]
pub struct Decide {
    /// The request.
    pub request_id: String,
    /// The decision or the answer.
    pub decision: Resolution,
    /// The request is a question asked during a call (only its running turn can take it).
    pub during_call: bool,
}

/// What the person said to a request the turn paused on.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// A decision on an approval request.
    Approval(Decision),
    /// An answer to a tool's question.
    Elicitation(ElicitAnswer),
}

/// Another node stored the answer to a question this session's turn asked during a call: the
/// turn reads it and gives it to the tool.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnsweredElsewhere {
    /// The elicitation.
    pub request_id: String,
}

/// Stops the running turn of this stream: its partial answer is stored and marked, its stream
/// ends with a terminal event. `NotFound` if that stream's turn is not running here.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct StopTurn {
    /// The stream whose turn to stop (`None`: whichever runs).
    pub stream_id: Option<StreamId>,
    /// Why.
    pub reason: StopReason,
}

/// Cancels any turn and stops the actor (after the session was cleared or deleted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Stops the actor if no turn runs (the registry retires idle sessions past its cap).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopIfIdle;

/// Sent by a session actor that stopped, to whoever started it (the registry).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget {
    /// The session.
    pub session_id: SessionId,
    /// The actor that stopped (a newer one for the same session is kept).
    pub addr: Addr<SessionActor>,
}
